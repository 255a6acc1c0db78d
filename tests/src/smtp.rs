//! A real SMTP server on loopback for the mail tests: `tests/py/smtp_server.py` (Python's aiosmtpd, installed by
//! scripts/test.sh into a virtual environment under the tools cache), with a CA and a server certificate made for
//! each run. Every message it receives is parsed there by Python's `email` package and read here as JSON.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::{TestCa, eventually};

/// The pinned aiosmtpd version; scripts/test.sh installs the same.
pub const AIOSMTPD_VERSION: &str = "1.4.6";

/// The Python of the virtual environment scripts/test.sh made for aiosmtpd.
pub fn smtp_python() -> PathBuf {
    let tools = std::env::var_os("COMMANDPOST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
                });
            cache.join("commandpost").join("tools")
        });
    tools
        .join(format!("aiosmtpd-{AIOSMTPD_VERSION}"))
        .join("bin")
        .join("python")
}

/// How the server protects its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    /// STARTTLS offered and required.
    StartTls,
    /// TLS from the first byte.
    Tls,
    /// No TLS offered.
    Plain,
}

/// The running SMTP server.
pub struct SmtpServer {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    messages: Arc<Mutex<Vec<Value>>>,
}

impl SmtpServer {
    /// Starts the server on `port` (0: any), in `mode`, with the certificate of `ca`, requiring `auth` (user,
    /// password) when given, answering every recipient with 550 when `reject`.
    pub async fn start(
        ca: &TestCa,
        mode: SmtpMode,
        auth: Option<(&str, &str)>,
        reject: bool,
        port: u16,
    ) -> SmtpServer {
        let python = smtp_python();
        assert!(
            python.exists(),
            "{} is missing: scripts/test.sh installs aiosmtpd {AIOSMTPD_VERSION} there",
            python.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/smtp_server.py");
        let mut command = Command::new(python);
        command
            .arg(script)
            .arg("--port")
            .arg(port.to_string())
            .arg("--mode")
            .arg(match mode {
                SmtpMode::StartTls => "starttls",
                SmtpMode::Tls => "tls",
                SmtpMode::Plain => "plain",
            })
            .arg("--cert")
            .arg(ca.cert())
            .arg("--key")
            .arg(ca.key())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some((user, password)) = auth {
            command.arg("--auth").arg(format!("{user}:{password}"));
        }
        if reject {
            command.arg("--reject");
        }
        let mut child = command.spawn().expect("starting the SMTP server");
        let stdout = child.stdout.take().expect("its stdout");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let received = messages.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line.strip_prefix("listening ") {
                    let _ = port_tx.send(port.trim().parse::<u16>().ok());
                } else if let Ok(message) = serde_json::from_str::<Value>(&line) {
                    received.lock().expect("the messages").push(message);
                }
            }
        });
        let port =
            tokio::task::spawn_blocking(move || port_rx.recv_timeout(Duration::from_secs(30)))
                .await
                .expect("waiting for the port")
                .ok()
                .flatten()
                .expect("the SMTP server printed its port");
        SmtpServer {
            child,
            port,
            messages,
        }
    }

    /// The messages received so far.
    pub fn messages(&self) -> Vec<Value> {
        self.messages.lock().expect("the messages").clone()
    }

    /// Waits until `n` messages arrived, and returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        eventually(
            &format!("{n} messages at the SMTP server"),
            Duration::from_secs(30),
            || async {
                let all = self.messages();
                (all.len() >= n).then_some(all)
            },
        )
        .await
        .expect("the messages arrive")
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One header of a received message, decoded (the first if repeated).
pub fn header<'a>(message: &'a Value, name: &str) -> Option<&'a str> {
    message["headers"][name.to_ascii_lowercase()][0].as_str()
}
