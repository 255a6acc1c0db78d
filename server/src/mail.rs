//! Status updates by email: the `[mail]` settings (an SMTP relay, the sender, the mailing lists by template and
//! severity), the message an update becomes, threaded per incident, and the mailer (`mail/sender.rs`).
//!
//! Sending an update (`api/mail.rs`) records it as "mark as sent" does and queues one outbox row ([`Sink::Mail`])
//! in the same transaction, keyed by the message's `Message-ID`, which derives from the incident and the heads the
//! update describes: a retried request, a restart or a second node finds the row already queued and sends nothing
//! twice. The row carries the whole message ([`Outgoing`]), rendered when it was sent, so a retry hours later sends
//! what the Communications lead saw.
//!
//! Threading: every update of an incident answers the previous one (`In-Reply-To`) and lists the thread root first
//! (`References`), under one subject per incident, so mail clients show one conversation per incident.
//!
//! [`Sink::Mail`]: crate::store::outbox::Sink::Mail

pub mod sender;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use incident_doc::template::MailTo;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use wire::DocumentId;

pub use crate::config::{MailList, MailSettings, Security};
use crate::webhooks::DeliverySettings;

/// The outbox endpoint of every mail row: a message goes to all its lists at once (one `To:`), so one row is one
/// message, and the lists it went to are in its payload.
pub const ENDPOINT: &str = "mail";

/// The outbox `kind` of a status update's email.
pub const KIND: &str = "update.mailed";

/// References kept in a message besides the root: RFC 5322 lets a long thread drop the middle, and mail clients
/// thread by the root and the parent.
const MAX_REFERENCES: usize = 20;

/// A `[mail]` configuration that cannot work, found at start-up.
#[derive(Debug, thiserror::Error)]
#[error("[mail] {0}")]
pub struct MailError(String);

/// The mail settings checked and the relay's transport built, shared by the send route and the mailer.
pub struct Mail {
    /// The lists.
    lists: Vec<MailList>,
    /// The sender.
    from: Mailbox,
    /// The `Message-ID` domain.
    domain: String,
    /// The relay, one connection per message.
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// The backoff and attempt limit, shared with webhooks (`[webhook-delivery]`).
    pub retry: DeliverySettings,
    /// Woken when a message was queued, so it goes out at once instead of at the next poll.
    pub wake: Notify,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("lists", &self.lists)
            .field("from", &self.from)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// Whether `host` names this machine's loopback interface, the only place `security = "none"` may send to.
fn loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `domain` may stand after the `@` of a `Message-ID` (letters, digits, dots and hyphens).
fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

impl Mail {
    /// Checks `settings` (addresses that parse, a loopback relay for `none`, a readable CA file, credentials in
    /// pairs) and builds the relay's transport; `retry` is the backoff failed attempts follow.
    pub fn new(settings: &MailSettings, retry: DeliverySettings) -> Result<Mail, MailError> {
        let host = settings.host.trim();
        if host.is_empty() {
            return Err(MailError("host is required (the SMTP relay)".into()));
        }
        if settings.security == Security::None && !loopback(host) {
            return Err(MailError(format!(
                "security = \"none\" sends updates and credentials in clear: only for a relay on loopback, not {host:?}; use starttls or tls"
            )));
        }
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| MailError(format!("from = {:?} is not an address: {e}", settings.from)))?;
        let domain = settings
            .message_id_domain
            .clone()
            .unwrap_or_else(|| from.email.domain().to_owned());
        if !valid_domain(&domain) {
            return Err(MailError(format!(
                "message-id-domain {domain:?} is not a domain (letters, digits, dots, hyphens)"
            )));
        }
        for list in &settings.lists {
            list.address.parse::<Mailbox>().map_err(|e| {
                MailError(format!(
                    "list address {:?} does not parse: {e}",
                    list.address
                ))
            })?;
            if list
                .templates
                .iter()
                .chain(&list.severities)
                .any(|v| v.trim().is_empty())
            {
                return Err(MailError(format!(
                    "list {:?}: empty template or severity names",
                    list.address
                )));
            }
        }
        if settings.timeout_secs == 0 {
            return Err(MailError("timeout-secs must be at least 1".into()));
        }
        let timeout = Duration::from_secs(settings.timeout_secs);
        let tls_parameters = || -> Result<TlsParameters, MailError> {
            let mut builder = TlsParameters::builder(host.to_owned());
            if let Some(path) = &settings.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| MailError(format!("ca-file {}: {e}", path.display())))?;
                let certificate = Certificate::from_pem(&pem).map_err(|e| {
                    MailError(format!(
                        "ca-file {}: not a PEM certificate: {e}",
                        path.display()
                    ))
                })?;
                builder = builder.add_root_certificate(certificate);
            }
            builder
                .build_rustls()
                .map_err(|e| MailError(format!("TLS: {e}")))
        };
        let tls = match settings.security {
            Security::Starttls => Tls::Required(tls_parameters()?),
            Security::Tls => Tls::Wrapper(tls_parameters()?),
            Security::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(settings.port.unwrap_or(settings.security.default_port()))
            .tls(tls)
            .timeout(Some(timeout));
        match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                builder = builder
                    .credentials(Credentials::new(user.clone(), password.clone()))
                    .authentication(vec![Mechanism::Plain, Mechanism::Login]);
            }
            (None, None) => {}
            _ => {
                return Err(MailError(
                    "username and password go together (AUTH needs both)".into(),
                ));
            }
        }
        Ok(Mail {
            lists: settings.lists.clone(),
            from,
            domain,
            transport: builder.build(),
            timeout,
            retry,
            wake: Notify::new(),
        })
    }

    /// The lists an incident of `template` at `severity` goes to, each once: the `[[mail.lists]]` that take it, in
    /// configuration order (only those with `restricted = true` for a restricted incident), then the template's own
    /// (`mail-to=…`, `mail-to.<severity>=…`; `template_lists`).
    pub fn recipients(
        &self,
        template: &str,
        template_lists: &[MailTo],
        severity: Option<&str>,
        restricted: bool,
    ) -> Vec<String> {
        let configured = self
            .lists
            .iter()
            .filter(|l| l.receives(template, severity, restricted))
            .map(|l| &l.address);
        let own = template_lists
            .iter()
            .filter(|m| m.severity.is_none() || m.severity.as_deref() == severity)
            .map(|m| &m.address);
        let mut to: Vec<String> = Vec::new();
        for address in configured.chain(own) {
            if !to.contains(address) {
                to.push(address.clone());
            }
        }
        to
    }

    /// The `Message-ID` of the update of `doc` that describes the document at `heads`: the same update always
    /// gets the same id (so it is queued once), a later one another.
    pub fn message_id(&self, doc: DocumentId, heads: &[String]) -> String {
        let mut sorted: Vec<&str> = heads.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        let mut hash = Sha256::new();
        hash.update(doc.to_string().as_bytes());
        for head in sorted {
            hash.update(b"\n");
            hash.update(head.as_bytes());
        }
        let digest = hex::encode(hash.finalize());
        format!("<update.{}.{doc}@{}>", &digest[..24], self.domain)
    }

    /// The message of a queued update, as it goes to the relay.
    pub fn message(&self, out: &Outgoing) -> Result<Message, String> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(one_line(&out.subject))
            .message_id(Some(out.message_id.clone()))
            .date(SystemTime::from(out.date))
            .header(AutoSubmitted);
        for to in &out.to {
            let mailbox: Mailbox = to
                .parse()
                .map_err(|e| format!("the list address {to:?} does not parse: {e}"))?;
            builder = builder.to(mailbox);
        }
        if let Some(parent) = &out.in_reply_to {
            builder = builder.in_reply_to(parent.clone());
        }
        if !out.references.is_empty() {
            builder = builder.references(out.references.join(" "));
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                out.text.clone(),
                out.html.clone(),
            ))
            .map_err(|e| format!("the message cannot be built: {e}"))
    }

    /// Sends one message through the relay, in at most twice `timeout-secs` in all (each SMTP step has
    /// `timeout-secs`; a relay answering every step slowly is cut off too), so the mailer's lease always outlasts it.
    /// Answers the relay's reply code on acceptance.
    pub async fn send(&self, message: Message) -> Result<u16, Failure> {
        use lettre::AsyncTransport;
        let limit = self.timeout * 2;
        match tokio::time::timeout(limit, self.transport.send(message)).await {
            Ok(Ok(response)) => Ok(u16::from(response.code())),
            Ok(Err(e)) => Err(Failure {
                permanent: e.is_permanent(),
                status: e.status().map(u16::from),
                error: crate::error::error_chain(&e),
            }),
            Err(_) => Err(Failure {
                permanent: false,
                status: None,
                error: format!("the relay took longer than {} s", limit.as_secs()),
            }),
        }
    }
}

/// Why the relay did not take a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The relay refused it for good (5xx): sending it again gets the same answer.
    pub permanent: bool,
    /// The relay's reply code, if it answered.
    pub status: Option<u16>,
    /// What failed, for the delivery log.
    pub error: String,
}

/// `text` on one line: control characters (CR, LF, tabs) become spaces, so an incident title can never start a
/// header of its own, and runs of spaces collapse.
pub fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Auto-Submitted: auto-generated` (RFC 3834): vacation responders and list software do not answer it.
#[derive(Debug, Clone, Copy)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// One queued status update email, as the outbox row carries it (its payload, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outgoing {
    /// `<…@domain>`; also the row's event id.
    pub message_id: String,
    /// The previous update's `Message-ID`, if this incident mailed one before.
    pub in_reply_to: Option<String>,
    /// The thread: its root first, then earlier updates, the parent last.
    pub references: Vec<String>,
    /// The subject, the same for every update of the incident while its title and severity stay.
    pub subject: String,
    /// The lists.
    pub to: Vec<String>,
    /// When it was sent (the `Date:`).
    pub date: DateTime<Utc>,
    /// The plain text part.
    pub text: String,
    /// The HTML part (sanitised).
    pub html: String,
}

/// What the subject of an incident's updates is made of.
#[derive(Debug, Clone)]
pub struct SubjectParts<'a> {
    /// The incident's title.
    pub title: &'a str,
    /// Its number.
    pub number: Option<i64>,
    /// Its severity.
    pub severity: Option<&'a str>,
    /// Whether it is a drill.
    pub drill: bool,
}

/// `[DRILL] [SEV1] #465 Checkout errors: status update`: no `Re:`, the same for every update of the incident (while
/// its title and severity stay), so clients that also thread by subject keep one conversation.
pub fn subject(parts: &SubjectParts<'_>) -> String {
    let mut subject = String::new();
    if parts.drill {
        subject.push_str("[DRILL] ");
    }
    if let Some(severity) = parts.severity.map(one_line).filter(|s| !s.is_empty()) {
        subject.push_str(&format!("[{severity}] "));
    }
    if let Some(n) = parts.number {
        subject.push_str(&format!("#{n} "));
    }
    let title = one_line(parts.title);
    subject.push_str(if title.is_empty() {
        "Untitled incident"
    } else {
        &title
    });
    subject.push_str(": status update");
    subject
}

/// The thread a new message joins: `(In-Reply-To, References)` from the `Message-ID`s already queued for the
/// incident, oldest first: the parent is the last, the root stays first however long the thread grows.
pub fn thread(earlier: &[String]) -> (Option<String>, Vec<String>) {
    let parent = earlier.last().cloned();
    let references = if earlier.len() > MAX_REFERENCES {
        let mut kept = vec![earlier[0].clone()];
        kept.extend_from_slice(&earlier[earlier.len() - (MAX_REFERENCES - 1)..]);
        kept
    } else {
        earlier.to_vec()
    };
    (parent, references)
}

/// The HTML part: the update's Markdown rendered and sanitised as the HTML export is, in a page that loads nothing.
pub fn html_part(title: &str, markdown: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n</head>\n<body>\n{}</body>\n</html>\n",
        incident_doc::export::escape_html(&one_line(title)),
        incident_doc::export::markdown_html(markdown),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> MailSettings {
        toml::from_str(toml).expect("mail settings parse")
    }

    #[test]
    fn lists_follow_template_and_severity() {
        let mail = Mail::new(
            &settings(
                r#"host = "smtp.example.com"
                from = "Incidents <incidents@example.com>"
                [[lists]]
                address = "ops@example.com"
                [[lists]]
                address = "exec@example.com"
                severities = ["SEV1"]
                [[lists]]
                address = "security@example.com"
                templates = ["security"]
                [[lists]]
                address = "ops@example.com"
                severities = ["SEV2"]
                [[lists]]
                address = "incident-response@example.com"
                templates = ["security"]
                restricted = true"#,
            ),
            DeliverySettings::default(),
        )
        .expect("valid settings");
        assert_eq!(
            mail.recipients("default", &[], Some("SEV3"), false),
            ["ops@example.com"]
        );
        assert_eq!(
            mail.recipients("default", &[], Some("SEV1"), false),
            ["ops@example.com", "exec@example.com"]
        );
        assert_eq!(
            mail.recipients("default", &[], Some("SEV2"), false),
            ["ops@example.com"]
        );
        assert_eq!(
            mail.recipients("security", &[], None, false),
            [
                "ops@example.com",
                "security@example.com",
                "incident-response@example.com"
            ]
        );
        // A restricted incident's updates go only to the lists that opt in, and to its template's own.
        assert_eq!(
            mail.recipients("security", &[], None, true),
            ["incident-response@example.com"]
        );
        let own_list = [MailTo {
            severity: None,
            address: "ciso@example.com".into(),
        }];
        assert_eq!(
            mail.recipients("security", &own_list, Some("SEV1"), true),
            ["incident-response@example.com", "ciso@example.com"]
        );
        // The template's own lists come after, each address once.
        let own = [
            MailTo {
                severity: None,
                address: "payments@example.com".into(),
            },
            MailTo {
                severity: Some("SEV1".into()),
                address: "exec@example.com".into(),
            },
            MailTo {
                severity: Some("SEV2".into()),
                address: "payments-leads@example.com".into(),
            },
        ];
        assert_eq!(
            mail.recipients("default", &own, Some("SEV1"), false),
            [
                "ops@example.com",
                "exec@example.com",
                "payments@example.com"
            ]
        );
        assert_eq!(
            mail.recipients("default", &own, Some("SEV2"), false),
            [
                "ops@example.com",
                "payments@example.com",
                "payments-leads@example.com"
            ]
        );
        assert_eq!(mail.domain, "example.com");
    }

    #[test]
    fn unusable_settings_are_refused_at_start() {
        let refused = |toml: &str| Mail::new(&settings(toml), DeliverySettings::default()).is_err();
        assert!(refused(r#"from = "a@example.com""#), "no host");
        assert!(refused(r#"host = "smtp.example.com""#), "no sender");
        assert!(refused(
            r#"host = "smtp.example.com"
            from = "not an address""#
        ));
        assert!(
            refused(
                r#"host = "smtp.example.com"
            from = "a@example.com"
            security = "none""#
            ),
            "clear text off loopback"
        );
        assert!(!refused(
            r#"host = "127.0.0.1"
            from = "a@example.com"
            security = "none""#
        ));
        assert!(
            refused(
                r#"host = "smtp.example.com"
            from = "a@example.com"
            username = "u""#
            ),
            "a user without a password"
        );
        assert!(refused(
            r#"host = "smtp.example.com"
            from = "a@example.com"
            message-id-domain = "x>\r\nBcc: y""#
        ));
        assert!(refused(
            r#"host = "smtp.example.com"
            from = "a@example.com"
            [[lists]]
            address = "ops@example.com\r\nBcc: evil@example.net""#
        ));
        assert!(refused(
            r#"host = "smtp.example.com"
            from = "a@example.com"
            ca-file = "/nonexistent/ca.pem""#
        ));
        assert!(toml::from_str::<MailSettings>(r#"hots = "x""#).is_err());
    }

    #[test]
    fn subjects_stay_on_one_line() {
        let s = subject(&SubjectParts {
            title: "Checkout\r\nBcc: evil@example.net\terrors",
            number: Some(465),
            severity: Some("SEV1"),
            drill: false,
        });
        assert_eq!(
            s,
            "[SEV1] #465 Checkout Bcc: evil@example.net errors: status update"
        );
        let drill = subject(&SubjectParts {
            title: "  ",
            number: None,
            severity: None,
            drill: true,
        });
        assert_eq!(drill, "[DRILL] Untitled incident: status update");
    }

    #[test]
    fn threads_keep_root_and_parent() {
        assert_eq!(thread(&[]), (None, vec![]));
        let ids: Vec<String> = (0..30).map(|i| format!("<{i}@x>")).collect();
        let (parent, refs) = thread(&ids);
        assert_eq!(parent.as_deref(), Some("<29@x>"));
        assert_eq!(refs.len(), MAX_REFERENCES);
        assert_eq!(refs[0], "<0@x>");
        assert_eq!(refs.last().map(String::as_str), Some("<29@x>"));
    }

    #[test]
    fn message_ids_derive_from_the_update() {
        let mail = Mail::new(
            &settings(
                r#"host = "smtp.example.com"
                from = "incidents@example.com"
                message-id-domain = "updates.example.com""#,
            ),
            DeliverySettings::default(),
        )
        .expect("valid settings");
        let doc = DocumentId::random();
        let a = mail.message_id(doc, &["b".into(), "a".into()]);
        assert_eq!(a, mail.message_id(doc, &["a".into(), "b".into()]));
        assert_ne!(a, mail.message_id(doc, &["a".into()]));
        assert_ne!(
            a,
            mail.message_id(DocumentId::random(), &["a".into(), "b".into()])
        );
        assert!(a.starts_with("<update.") && a.ends_with("@updates.example.com>"));
    }
}
