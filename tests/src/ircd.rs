//! [`Ircd`]: a real IRC server (Debian's `ngircd`) on loopback for the IRC bot's tests: its configuration written
//! to a temporary directory, a free port, optionally a TLS port presenting a [`TestCa`]'s certificate, run in the
//! foreground and killed on drop. It can be restarted on the same ports.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{TestCa, eventually};

/// Where `scripts/test.sh` installs ngircd (Debian's package), overridable with `COMMANDPOST_NGIRCD`.
fn ngircd_path() -> String {
    std::env::var("COMMANDPOST_NGIRCD").unwrap_or_else(|_| "/usr/sbin/ngircd".to_owned())
}

/// A running ngircd.
pub struct Ircd {
    /// The plain-text port.
    pub port: u16,
    /// The TLS port, when started with TLS.
    pub tls_port: Option<u16>,
    /// Holds the configuration and the log.
    dir: TempDir,
    /// The CA and the certificate of the TLS port, when there is one.
    ca: Option<TestCa>,
    /// The server process.
    child: Option<Child>,
}

/// A free port outside the kernel's ephemeral range (32768 and up), from a range of this process's own: a port
/// taken with port 0 could be handed to another test's socket while ngircd restarts on it.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 600) as u16 * 20;
    for _ in 0..2000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (base - 20_000 + offset) % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}

impl Ircd {
    /// Starts ngircd without TLS.
    pub async fn start() -> Ircd {
        Ircd::start_with(false).await
    }

    /// Starts ngircd with a TLS port too; [`Ircd::ca_file`] is the CA that signed its certificate (for `localhost`
    /// and `127.0.0.1`).
    pub async fn start_tls() -> Ircd {
        Ircd::start_with(true).await
    }

    async fn start_with(tls: bool) -> Ircd {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let tls_port = tls.then(free_port);
        let ca = tls.then(TestCa::new);
        let ssl = match (tls_port, &ca) {
            (Some(tls_port), Some(ca)) => format!(
                "[SSL]\nCertFile = {}\nKeyFile = {}\nPorts = {tls_port}\n",
                ca.cert().display(),
                ca.key().display()
            ),
            _ => String::new(),
        };
        let conf = format!(
            "[Global]\n\
             Name = irc.test\n\
             Info = commandpost test network\n\
             Listen = 127.0.0.1\n\
             Ports = {port}\n\
             MotdPhrase = commandpost tests\n\
             PidFile = {dir}/ngircd.pid\n\
             ServerUID = {uid}\n\
             ServerGID = {gid}\n\
             [Limits]\n\
             MaxNickLength = 30\n\
             MaxConnectionsIP = 0\n\
             MaxJoins = 0\n\
             PingTimeout = 120\n\
             PongTimeout = 20\n\
             ConnectRetry = 60\n\
             [Options]\n\
             DNS = no\n\
             Ident = no\n\
             PAM = no\n\
             RequireAuthPing = no\n\
             {ssl}",
            dir = dir.path().display(),
            uid = current_id("-u"),
            gid = current_id("-g"),
        );
        std::fs::write(dir.path().join("ngircd.conf"), conf).expect("writing ngircd.conf");
        let mut ircd = Ircd {
            port,
            tls_port,
            dir,
            ca,
            child: None,
        };
        ircd.spawn().await;
        ircd
    }

    /// The CA certificate (PEM) that signed the TLS port's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.ca
            .as_ref()
            .expect("started with TLS (Ircd::start_tls)")
            .ca_file()
    }

    /// Starts the process and waits until it accepts connections.
    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("ngircd.log"))
            .expect("the ngircd log");
        let child = Command::new(ngircd_path())
            .arg("-n")
            .arg("-f")
            .arg(self.dir.path().join("ngircd.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log, twice"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} (scripts/test.sh installs Debian's ngircd): {e}",
                    ngircd_path()
                )
            });
        self.child = Some(child);
        let port = self.port;
        let ready = eventually(
            "ngircd to accept connections",
            crate::DEADLINE,
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await;
        if let Err(error) = ready {
            panic!("{error}; ngircd's log:\n{}", self.log());
        }
    }

    /// Kills the server (every client is disconnected at once) and starts it again on the same ports.
    pub async fn restart(&mut self) {
        self.kill();
        // The port must be free again before the new process binds it.
        let port = self.port;
        eventually("ngircd's port to close", crate::DEADLINE, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
                .then_some(())
        })
        .await
        .expect("the old ngircd is gone");
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.spawn().await;
    }

    /// What ngircd logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ngircd.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Ircd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `id -u` or `id -g`: ngircd started as root switches to `ServerUID`, which must be able to read the test's files.
fn current_id(flag: &str) -> String {
    Command::new("id")
        .arg(flag)
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| "0".to_owned())
}
