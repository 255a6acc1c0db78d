//! [`IrcClient`]: a small raw IRC client for the bot's tests: registers, joins (the first joiner of a channel is
//! its operator in ngircd, so it can `KICK`), says lines (any bytes, for hostile input), and reads what the server
//! relays, answering `PING`s. Its own minimal line reading, independent of the bot's parser.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// One line from the server, split just enough for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The whole line, without CR LF.
    pub raw: String,
    /// The source's nick (before `!`), if the line has a source.
    pub nick: Option<String>,
    /// The command or numeric.
    pub command: String,
    /// The parameters, the trailing one included.
    pub params: Vec<String>,
}

impl Line {
    fn parse(raw: &str) -> Line {
        let mut rest = raw;
        if rest.starts_with('@') {
            rest = rest.split_once(' ').map_or("", |(_, after)| after);
        }
        let mut nick = None;
        if let Some(sourced) = rest.strip_prefix(':') {
            let (source, after) = sourced.split_once(' ').unwrap_or((sourced, ""));
            nick = Some(source.split('!').next().unwrap_or(source).to_owned());
            rest = after;
        }
        let (head, trailing) = match rest.split_once(" :") {
            Some((head, trailing)) => (head, Some(trailing)),
            None => (rest, None),
        };
        let mut words = head.split(' ').filter(|word| !word.is_empty());
        let command = words.next().unwrap_or("").to_owned();
        let mut params: Vec<String> = words.map(str::to_owned).collect();
        params.extend(trailing.map(str::to_owned));
        Line {
            raw: raw.to_owned(),
            nick,
            command,
            params,
        }
    }

    /// Parameter `i`, or `""`.
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map_or("", String::as_str)
    }
}

/// A registered connection to the test server.
pub struct IrcClient {
    /// The nick it registered with.
    pub nick: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Every line read so far, in order.
    pub seen: Vec<Line>,
}

impl IrcClient {
    /// Connects to `127.0.0.1:port` and registers as `nick` (user name `user`), waiting for the welcome.
    pub async fn connect(port: u16, nick: &str, user: &str) -> anyhow::Result<IrcClient> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let (reader, writer) = stream.into_split();
        let mut client = IrcClient {
            nick: nick.to_owned(),
            reader: BufReader::new(reader),
            writer,
            seen: Vec::new(),
        };
        client.send(&format!("NICK {nick}")).await?;
        client
            .send(&format!("USER {user} 0 * :test client {nick}"))
            .await?;
        client
            .wait_for("the welcome", crate::DEADLINE, |line| line.command == "001")
            .await?;
        Ok(client)
    }

    /// Sends one line (CR LF added); any bytes, for hostile tests.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.write_all(b"\r\n").await?;
        Ok(())
    }

    /// Sends one line.
    pub async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.send_raw(line.as_bytes()).await
    }

    /// Says `text` in `channel`.
    pub async fn say(&mut self, channel: &str, text: &str) -> anyhow::Result<()> {
        self.send(&format!("PRIVMSG {channel} :{text}")).await
    }

    /// Joins `channel` and waits for the end of its names list.
    pub async fn join(&mut self, channel: &str) -> anyhow::Result<()> {
        self.send(&format!("JOIN {channel}")).await?;
        self.wait_for("our JOIN's names list", crate::DEADLINE, |line| {
            line.command == "366"
        })
        .await?;
        Ok(())
    }

    /// The nicks in `channel` now (`NAMES`), without their `@`/`+`.
    pub async fn names(&mut self, channel: &str) -> anyhow::Result<Vec<String>> {
        self.send(&format!("NAMES {channel}")).await?;
        let mut names = Vec::new();
        loop {
            let line = self.next(crate::DEADLINE).await?;
            match line.command.as_str() {
                "353" => names.extend(
                    line.params
                        .last()
                        .map(String::as_str)
                        .unwrap_or("")
                        .split(' ')
                        .filter(|name| !name.is_empty())
                        .map(|name| name.trim_start_matches(['@', '+']).to_owned()),
                ),
                "366" => return Ok(names),
                _ => {}
            }
        }
    }

    /// Reads lines until one satisfies `check`, and returns it; fails after `timeout`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Line) -> bool,
    ) -> anyhow::Result<Line> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self
                .next(left)
                .await
                .map_err(|e| anyhow::anyhow!("waiting for {what}: {e}"))?;
            if check(&line) {
                return Ok(line);
            }
        }
    }

    /// The next line, answering `PING`s on the way; fails after `timeout` or at the end of the stream.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Line> {
        let mut raw = Vec::new();
        let read = tokio::time::timeout(timeout, self.reader.read_until(b'\n', &mut raw))
            .await
            .map_err(|_| anyhow::anyhow!("nothing read within {timeout:?}"))??;
        anyhow::ensure!(read > 0, "the server closed the connection");
        let text = String::from_utf8_lossy(&raw);
        let line = Line::parse(text.trim_end_matches(['\r', '\n']));
        if line.command == "PING" {
            let token = line.param(0).to_owned();
            self.send(&format!("PONG :{token}")).await?;
        }
        self.seen.push(line.clone());
        Ok(line)
    }

    /// Collects the `PRIVMSG` texts `from` says in `channel` until `count` arrived; fails after `timeout`.
    pub async fn messages_from(
        &mut self,
        from: &str,
        channel: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut texts = Vec::new();
        while texts.len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self.next(left).await.map_err(|e| {
                anyhow::anyhow!(
                    "after {} of {count} lines from {from}: {e} ({texts:?})",
                    texts.len()
                )
            })?;
            if line.command == "PRIVMSG"
                && line.nick.as_deref() == Some(from)
                && line.param(0).eq_ignore_ascii_case(channel)
            {
                texts.push(line.param(1).to_owned());
            }
        }
        Ok(texts)
    }
}
