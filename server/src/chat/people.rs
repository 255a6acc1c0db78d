//! Who is who in chat: `[[chat.people]]` maps IRC masks (`nick!user@host` with `*`/`?` wildcards), IRC services
//! accounts and Slack user ids to commandpost people and their scope, checked when the server starts. A speaker
//! nobody maps is logged under their chat name and refused every command.

use incident_doc::channel::Network;

use super::Speaker;
use crate::auth::Scope;
use crate::config::ChatPerson;

/// A commandpost person chat identities speak for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Their name, as the timeline and the roles say it.
    pub name: String,
    /// What they may do from chat.
    pub scope: Scope,
    /// IRC masks, lowercased, each `nick!user@host`.
    irc: Vec<String>,
    /// The IRC services account, lowercased.
    irc_account: Option<String>,
    /// The Slack user id.
    slack: Option<String>,
}

/// The people of `[[chat.people]]`, in configuration order: the first that matches a speaker is theirs.
#[derive(Debug, Clone, Default)]
pub struct People(Vec<Person>);

impl People {
    /// Checks the entries: a name, a known scope, masks that are whole (`nick!user@host` or a bare nick) and do not
    /// match everyone, Slack ids as Slack writes them, and no identity given to two people.
    pub fn new(entries: &[ChatPerson]) -> Result<People, String> {
        let mut people: Vec<Person> = Vec::new();
        for entry in entries {
            let name = entry.name.trim();
            let bad = |why: String| format!("[[chat.people]] {name:?}: {why}");
            if name.is_empty() || name.chars().count() > incident_doc::MAX_SHORT_CHARS {
                return Err(bad("a name of 1 to 200 characters is needed".into()));
            }
            let scope: Scope = entry.scope.parse().map_err(|_| {
                bad(format!(
                    "unknown scope {:?} (read, write or admin)",
                    entry.scope
                ))
            })?;
            let mut irc = Vec::new();
            for mask in &entry.irc {
                irc.push(full_mask(mask).map_err(&bad)?);
            }
            if let Some(id) = &entry.slack
                && !is_slack_user(id)
            {
                return Err(bad(format!("{id:?} is not a Slack user id (U… or W…)")));
            }
            let person = Person {
                name: name.to_owned(),
                scope,
                irc,
                irc_account: entry.irc_account.as_ref().map(|a| a.trim().to_lowercase()),
                slack: entry.slack.clone(),
            };
            for other in &people {
                let shared = person.irc.iter().any(|m| other.irc.contains(m))
                    || (person.irc_account.is_some() && person.irc_account == other.irc_account)
                    || (person.slack.is_some() && person.slack == other.slack);
                if shared {
                    return Err(bad(format!("shares a chat identity with {:?}", other.name)));
                }
            }
            people.push(person);
        }
        Ok(People(people))
    }

    /// The person `speaker` speaks for on `network`: on Slack by user id; on IRC by services account first (when
    /// the server tagged the line with one), then by mask.
    pub fn find(&self, network: Network, speaker: &Speaker) -> Option<&Person> {
        match network {
            Network::Slack => self
                .0
                .iter()
                .find(|p| p.slack.as_deref() == Some(speaker.name.as_str())),
            Network::Irc => {
                let account = speaker.account.as_ref().map(|a| a.to_lowercase());
                if let Some(account) = account
                    && let Some(person) = self
                        .0
                        .iter()
                        .find(|p| p.irc_account.as_deref() == Some(account.as_str()))
                {
                    return Some(person);
                }
                let mask = speaker.mask.as_ref()?.to_lowercase();
                self.0.iter().find(|p| p.irc.iter().any(|m| glob(m, &mask)))
            }
        }
    }
}

/// A mask as written, whole and lowercased: a bare nick `alice` is `alice!*@*`. A mask of wildcards alone in
/// the nick and host (`*!*@*`) would let anyone speak for the person and is refused.
fn full_mask(mask: &str) -> Result<String, String> {
    let mask = mask.trim().to_lowercase();
    let full = if mask.contains('!') || mask.contains('@') {
        mask.clone()
    } else {
        format!("{mask}!*@*")
    };
    let (nick, rest) = full
        .split_once('!')
        .ok_or_else(|| format!("IRC mask {mask:?} is not nick!user@host"))?;
    let (user, host) = rest
        .split_once('@')
        .ok_or_else(|| format!("IRC mask {mask:?} is not nick!user@host"))?;
    let wild = |part: &str| part.chars().all(|c| c == '*' || c == '?');
    if nick.is_empty() || user.is_empty() || host.is_empty() {
        return Err(format!("IRC mask {mask:?} has an empty part"));
    }
    if wild(nick) && wild(host) {
        return Err(format!("IRC mask {mask:?} matches everyone"));
    }
    if full.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "IRC mask {mask:?} has spaces or control characters"
        ));
    }
    Ok(full)
}

/// Whether `text` matches the glob `pattern` (`*` any run, `?` one character), without backtracking blow-up.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A Slack user id: `U` or `W` and 8 to 20 uppercase letters or digits.
fn is_slack_user(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some('U' | 'W'))
        && (9..=21).contains(&id.len())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, irc: &[&str], account: Option<&str>, slack: Option<&str>) -> ChatPerson {
        ChatPerson {
            name: name.into(),
            scope: "write".into(),
            irc: irc.iter().map(|m| (*m).to_owned()).collect(),
            irc_account: account.map(str::to_owned),
            slack: slack.map(str::to_owned),
        }
    }

    fn irc(mask: &str, account: Option<&str>) -> Speaker {
        Speaker {
            name: mask.split('!').next().unwrap_or_default().into(),
            mask: Some(mask.into()),
            account: account.map(str::to_owned),
        }
    }

    #[test]
    fn masks_accounts_and_slack_ids_map_people() {
        let people = People::new(&[
            entry("alice", &["alice"], None, Some("U024BE7LH")),
            entry("bob", &["bob*!*@*.corp.example"], Some("BobAcct"), None),
        ])
        .expect("valid");
        let name = |p: Option<&Person>| p.map(|p| p.name.clone());
        assert_eq!(
            name(people.find(Network::Irc, &irc("Alice!~a@host", None))),
            Some("alice".into())
        );
        assert_eq!(
            name(people.find(Network::Irc, &irc("bob_!b@vpn.corp.example", None))),
            Some("bob".into())
        );
        assert_eq!(
            name(people.find(Network::Irc, &irc("bob!b@evil.example", None))),
            None
        );
        // The account speaks for bob whatever the nick and host.
        assert_eq!(
            name(people.find(Network::Irc, &irc("zz!z@anywhere", Some("bobacct")))),
            Some("bob".into())
        );
        assert_eq!(
            name(people.find(Network::Irc, &irc("alice2!a@host", None))),
            None
        );
        let slack = Speaker {
            name: "U024BE7LH".into(),
            mask: None,
            account: None,
        };
        assert_eq!(
            name(people.find(Network::Slack, &slack)),
            Some("alice".into())
        );
        // A Slack id is no IRC identity and the other way round.
        assert_eq!(name(people.find(Network::Irc, &slack)), None);
        assert_eq!(
            name(people.find(Network::Slack, &irc("alice!a@h", None))),
            None
        );
    }

    #[test]
    fn bad_entries_are_refused_at_start() {
        let bad = [
            vec![entry("", &["x"], None, None)],
            vec![entry("a", &["*"], None, None)],
            vec![entry("a", &["*!*@*"], None, None)],
            vec![entry("a", &["?!x@*"], None, None)],
            vec![entry("a", &["a!b"], None, None)],
            vec![entry("a", &["a b"], None, None)],
            vec![entry("a", &[], None, Some("C0123ABCD"))],
            vec![entry("a", &[], None, Some("u024be7lh"))],
            vec![
                entry("a", &["x"], None, None),
                entry("b", &["X"], None, None),
            ],
            vec![
                entry("a", &[], Some("acct"), None),
                entry("b", &[], Some("ACCT"), None),
            ],
        ];
        for entries in bad {
            assert!(People::new(&entries).is_err(), "{entries:?}");
        }
        let mut wrong_scope = entry("a", &["a"], None, None);
        wrong_scope.scope = "root".into();
        assert!(People::new(&[wrong_scope]).is_err());
    }

    #[test]
    fn globs_match_without_blowing_up() {
        assert!(glob("a*b?c", "axxxbyc"));
        assert!(!glob("a*b?c", "axxxbc"));
        assert!(glob("*", ""));
        // A pathological pattern against a long text finishes at once.
        let text = "a".repeat(10_000);
        assert!(!glob(&"*a".repeat(50).replace("*a*a", "*a*b"), &text));
    }
}
