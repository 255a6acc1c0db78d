//! Leases: which node holds a cluster-wide role (such as the one connection of a chat bot to its network).
//!
//! A lease is a row `(name, holder, epoch, expires_at)`. [`Store::acquire_lease`](super::Store::acquire_lease)
//! takes a free or expired lease, or renews the caller's own, in one atomic statement, so of nodes racing for it
//! exactly one gets it. The *epoch* (fencing token) grows every time the lease changes hands or is taken again after
//! it lapsed, so a holder can tell "I kept it" from "I have it again, after someone else may have had it". Holders
//! renew well before `expires_at`; one that cannot renew in time must stop acting at once, because another node may
//! take the lease as soon as it expires.

use chrono::{DateTime, Utc};

/// The statement both backends run for [`Store::acquire_lease`](super::Store::acquire_lease), with their own
/// placeholders: `{name}`, `{holder}`, `{now}`, `{expires}`. An upsert whose update applies only when the caller
/// already holds the lease or it has expired; the epoch moves on whenever the lease had expired (even for the same
/// holder: it may have been held by another in between, and its holder stopped acting when it lapsed).
pub(super) fn acquire_statement(name: &str, holder: &str, now: &str, expires: &str) -> String {
    format!(
        "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ({name}, {holder}, 1, {expires})
         ON CONFLICT (name) DO UPDATE SET
             epoch = CASE WHEN leases.expires_at <= {now} THEN leases.epoch + 1 ELSE leases.epoch END,
             holder = excluded.holder,
             expires_at = excluded.expires_at
         WHERE leases.holder = excluded.holder OR leases.expires_at <= {now}
         RETURNING epoch"
    )
}

/// The moment a released lease expires at: long past, so the next caller takes it at once (with a new epoch).
pub(super) fn released() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// Conformance cases of leases, run against both backends by `conformance_suite!`.
#[cfg(test)]
pub(crate) mod cases {
    use chrono::{Duration, TimeZone, Utc};

    use crate::store::Store;

    fn t(seconds: i64) -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0)
            .single()
            .expect("a valid time")
            + Duration::seconds(seconds)
    }

    /// Two holders contend: one wins and renews with the same epoch; the other gets nothing until the lease
    /// expires, then takes it with a greater epoch; a released lease is free at once; leases are independent.
    pub(crate) async fn leases_fence_their_holders(store: &dyn Store) {
        let ttl = Duration::seconds(6);
        let first = store
            .acquire_lease("irc", "node-a", ttl, t(0))
            .await
            .expect("acquire");
        assert_eq!(first, Some(1), "a free lease is taken with epoch 1");
        assert_eq!(
            store
                .acquire_lease("irc", "node-b", ttl, t(1))
                .await
                .expect("contend"),
            None,
            "a held lease is refused to another holder"
        );
        assert_eq!(
            store
                .acquire_lease("irc", "node-a", ttl, t(2))
                .await
                .expect("renew"),
            Some(1),
            "renewing keeps the epoch"
        );
        // Renewed at 2 s: still held at 7 s, expired at 8 s.
        assert_eq!(
            store
                .acquire_lease("irc", "node-b", ttl, t(7))
                .await
                .expect("contend"),
            None
        );
        assert_eq!(
            store
                .acquire_lease("irc", "node-b", ttl, t(8))
                .await
                .expect("take over"),
            Some(2),
            "an expired lease goes to the next caller with a greater epoch"
        );
        assert_eq!(
            store
                .acquire_lease("irc", "node-a", ttl, t(9))
                .await
                .expect("late renew"),
            None,
            "the old holder cannot renew a lease it lost"
        );
        assert_eq!(
            store
                .acquire_lease("slack", "node-a", ttl, t(9))
                .await
                .expect("other lease"),
            Some(1),
            "leases are independent by name"
        );
        // Only the holder may release.
        store.release_lease("irc", "node-a").await.expect("release");
        assert_eq!(
            store
                .acquire_lease("irc", "node-a", ttl, t(10))
                .await
                .expect("contend"),
            None,
            "releasing someone else's lease does nothing"
        );
        store.release_lease("irc", "node-b").await.expect("release");
        assert_eq!(
            store
                .acquire_lease("irc", "node-a", ttl, t(10))
                .await
                .expect("take"),
            Some(3),
            "a released lease is free at once, with a new epoch"
        );
        // The same holder taking its own lapsed lease again starts a new epoch too.
        assert_eq!(
            store
                .acquire_lease("irc", "node-a", ttl, t(30))
                .await
                .expect("retake"),
            Some(4)
        );
    }

    /// Many callers racing for one free lease at the same moment: exactly one wins.
    pub(crate) async fn racing_holders_get_one_lease(store: &dyn Store) {
        let ttl = Duration::seconds(6);
        let results = futures_util::future::join_all((0..8).map(|i| {
            let holder = format!("node-{i}");
            async move { store.acquire_lease("race", &holder, ttl, t(0)).await }
        }))
        .await;
        let winners: Vec<_> = results
            .into_iter()
            .filter_map(|result| result.expect("acquire"))
            .collect();
        assert_eq!(winners, vec![1], "one holder and epoch 1");
    }
}
