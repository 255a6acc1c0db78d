//! The live `/sync` connections of each token and single sign-on session: what caps connections per token and what
//! closes a revoked token's or ended session's connections within a second.
//!
//! Every connection registers under its credential's key: a token's hash (the hash, not the name: a name can be
//! reused by a new token after the old one was revoked), or [`SESSION_KEY_PREFIX`] and a session's hash. Sessions
//! register under the name `session:<id>`, which no token name can be, so that ending a session by id on this
//! node closes exactly its connections. Revocation reaches the connections two ways: `DELETE /api/tokens/{name}` on this
//! node cancels them at once ([`Sessions::revoke_name`]), and a sweeper re-checks every token with live connections
//! against storage every [`SWEEP_INTERVAL`], which covers `commandpost token revoke` run from the command line and
//! revocations made through another node sharing the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::peer::ConnId;
use crate::sso::Sso;
use crate::store::Store;

/// The start of the registry key (and of a `/sync` ticket's credential) of a single sign-on session.
pub const SESSION_KEY_PREFIX: &str = "session:";

/// How often the sweeper asks storage whether the tokens of live connections are still valid. Half a second keeps
/// revocation by another process under one second including the query, at one indexed lookup per live token.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// One live connection, as the registry keeps it.
struct Entry {
    /// The token's name, for revocation by name on this node.
    name: String,
    /// Cancelled to close the connection because its token was revoked.
    revoked: CancellationToken,
}

/// The registry of live connections per token; clones share it.
#[derive(Clone, Default)]
pub struct Sessions {
    /// Token hash → connection → entry. A std mutex, never held across an `.await`.
    live: Arc<Mutex<HashMap<String, HashMap<ConnId, Entry>>>>,
}

/// The token already has as many live connections as allowed.
#[derive(Debug, thiserror::Error)]
#[error("this token already has {0} open /sync connections, the limit")]
pub struct TooManyConnections(pub usize);

/// A registered connection; dropping it unregisters the connection.
pub struct Session {
    sessions: Sessions,
    hash: String,
    conn: ConnId,
    /// Cancelled when the token is revoked.
    pub revoked: CancellationToken,
}

impl Session {
    /// The connection this session registers.
    pub fn conn(&self) -> ConnId {
        self.conn
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut live = self.sessions.lock();
        if let Some(conns) = live.get_mut(&self.hash) {
            conns.remove(&self.conn);
            if conns.is_empty() {
                live.remove(&self.hash);
            }
        }
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<ConnId, Entry>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers connection `conn` of the token with this hash and name, unless the token already has `limit`
    /// live connections.
    pub fn admit(
        &self,
        hash: &str,
        name: &str,
        conn: ConnId,
        limit: usize,
    ) -> Result<Session, TooManyConnections> {
        let mut live = self.lock();
        let conns = live.entry(hash.to_owned()).or_default();
        if conns.len() >= limit {
            return Err(TooManyConnections(limit));
        }
        let revoked = CancellationToken::new();
        conns.insert(
            conn,
            Entry {
                name: name.to_owned(),
                revoked: revoked.clone(),
            },
        );
        Ok(Session {
            sessions: self.clone(),
            hash: hash.to_owned(),
            conn,
            revoked,
        })
    }

    /// The names with live connections to this node, sorted: the people present, for the role rotation.
    pub fn names(&self) -> Vec<String> {
        let names: std::collections::BTreeSet<String> = self
            .lock()
            .values()
            .flat_map(|conns| conns.values().map(|entry| entry.name.clone()))
            .collect();
        names.into_iter().collect()
    }

    /// How many connections the token with this hash has open.
    pub fn count(&self, hash: &str) -> usize {
        self.lock().get(hash).map_or(0, HashMap::len)
    }

    /// Closes every connection of tokens called `name` (after the store revoked the live one; older tokens of that
    /// name were revoked before and their connections are closed too).
    pub fn revoke_name(&self, name: &str) -> usize {
        let live = self.lock();
        let mut closed = 0;
        for entry in live.values().flat_map(HashMap::values) {
            if entry.name == name {
                entry.revoked.cancel();
                closed += 1;
            }
        }
        closed
    }

    /// Closes every connection of the token with this hash.
    fn revoke_hash(&self, hash: &str) {
        if let Some(conns) = self.lock().get(hash) {
            for entry in conns.values() {
                entry.revoked.cancel();
            }
        }
    }

    /// Re-checks, every [`SWEEP_INTERVAL`] until `shutdown`, that the token or session of each live connection
    /// is still valid in `store`, and closes the connections of tokens that were revoked (or deleted) and of
    /// sessions that were ended or reached their lifetime, on any node. A live connection is use: it renews its
    /// session's idle timeout. A storage error keeps the connections: an outage is not a revocation.
    pub fn sweep(&self, store: Arc<dyn Store>, sso: Option<Arc<Sso>>, shutdown: CancellationToken) {
        let sessions = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let hashes: Vec<String> = sessions.lock().keys().cloned().collect();
                for hash in hashes {
                    if let Some(session) = hash.strip_prefix(SESSION_KEY_PREFIX) {
                        let live = match &sso {
                            Some(sso) => sso.session(&*store, session).await.map(|s| s.is_some()),
                            None => Ok(false),
                        };
                        if let Ok(false) = live {
                            sessions.revoke_hash(&hash);
                        }
                        continue;
                    }
                    match store.token_by_hash(&hash).await {
                        Ok(Some(record)) if record.revoked_at.is_none() => {}
                        Ok(_) => sessions.revoke_hash(&hash),
                        Err(_) => {}
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_forgets_dropped_sessions() {
        let sessions = Sessions::default();
        let a = sessions
            .admit("h1", "alice", ConnId(1), 2)
            .expect("under the limit");
        let _b = sessions
            .admit("h1", "alice", ConnId(2), 2)
            .expect("under the limit");
        assert!(sessions.admit("h1", "alice", ConnId(3), 2).is_err());
        // Another token is counted apart.
        let _c = sessions
            .admit("h2", "bob", ConnId(4), 2)
            .expect("under the limit");
        assert_eq!(sessions.count("h1"), 2);
        drop(a);
        assert_eq!(sessions.count("h1"), 1);
        assert!(sessions.admit("h1", "alice", ConnId(5), 2).is_ok());
    }

    #[test]
    fn revoking_a_name_cancels_only_its_connections() {
        let sessions = Sessions::default();
        let alice = sessions
            .admit("h1", "alice", ConnId(1), 8)
            .expect("under the limit");
        let bob = sessions
            .admit("h2", "bob", ConnId(2), 8)
            .expect("under the limit");
        assert_eq!(sessions.revoke_name("alice"), 1);
        assert!(alice.revoked.is_cancelled());
        assert!(!bob.revoked.is_cancelled());
    }
}
