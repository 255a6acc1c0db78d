//! [`Proxy`]: a TCP proxy on a loopback port in front of a server, whose link a test can cut and restore.
//!
//! A browser that loads the app through the proxy's address reaches the server only through it, so
//! [`Proxy::cut`] is "this browser's connection to the server is cut" (a laptop losing its network) while every
//! other client keeps talking to the server directly. The proxy forwards bytes unchanged in both directions; it
//! knows nothing of HTTP or WebSocket. [`Proxy::start_with_delay`] holds every chunk back for a fixed time in each
//! direction, as a slow network does (a 300 ms delay is 600 ms of round trip), keeping the byte order.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

/// A cuttable TCP proxy to one target address.
pub struct Proxy {
    /// The address clients connect to (127.0.0.1 and a port the OS chose).
    pub addr: SocketAddr,
    /// What the accept loop and [`Proxy::cut`] share.
    links: Arc<Mutex<Links>>,
    /// The accept loop; aborted when the proxy is dropped.
    accept: JoinHandle<()>,
}

/// The live connections and whether the link is cut, under one lock, so that a connection accepted while
/// [`Proxy::cut`] runs is either refused or closed by it, never left open.
#[derive(Default)]
struct Links {
    /// Refuse new connections and hold no open ones.
    cut: bool,
    /// The forwarding task of each connection accepted since the last cut (finished ones are pruned on accept).
    forwarding: Vec<AbortHandle>,
}

impl Proxy {
    /// Starts a proxy on `127.0.0.1:0` that forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Proxy> {
        Proxy::start_with_delay(target, Duration::ZERO).await
    }

    /// Starts a proxy that delivers every byte `delay` after it arrived, in each direction.
    pub async fn start_with_delay(target: SocketAddr, delay: Duration) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy's loopback port")?;
        let addr = listener
            .local_addr()
            .context("reading the proxy's address")?;
        let links = Arc::new(Mutex::new(Links::default()));
        let accept = tokio::spawn(accept_loop(listener, target, delay, links.clone()));
        Ok(Proxy {
            addr,
            links,
            accept,
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash: the origin a browser behind this proxy loads the app from.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every open connection and refuses new ones (each is accepted and closed at once, as a dead network
    /// path looks to a browser that retries) until [`Proxy::restore`].
    pub fn cut(&self) {
        let mut links = lock(&self.links);
        links.cut = true;
        for task in links.forwarding.drain(..) {
            // Dropping the task drops both of its sockets, which closes them.
            task.abort();
        }
    }

    /// Forwards new connections again after [`Proxy::cut`].
    pub fn restore(&self) {
        lock(&self.links).cut = false;
    }

    /// Whether the link is cut now.
    pub fn is_cut(&self) -> bool {
        lock(&self.links).cut
    }

    /// How many connections are being forwarded now (finished ones may still count until the next accept).
    pub fn open_connections(&self) -> usize {
        lock(&self.links)
            .forwarding
            .iter()
            .filter(|task| !task.is_finished())
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Locks the shared state; a panic elsewhere while holding it left nothing half-done (every update is one
/// assignment or one drain), so a poisoned lock is still usable.
fn lock(links: &Mutex<Links>) -> MutexGuard<'_, Links> {
    links.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Accepts connections until the proxy is dropped, forwarding each unless the link is cut.
async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    delay: Duration,
    links: Arc<Mutex<Links>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors or similar: let the client's connect fail, and try again.
            tokio::task::yield_now().await;
            continue;
        };
        let mut guard = lock(&links);
        if guard.cut {
            drop(client);
            continue;
        }
        guard.forwarding.retain(|task| !task.is_finished());
        let task = tokio::spawn(forward(client, target, delay));
        guard.forwarding.push(task.abort_handle());
    }
}

/// Connects to `target` and copies bytes both ways until either side closes, `delay` late.
async fn forward(mut client: TcpStream, target: SocketAddr, delay: Duration) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        // The server is down: the client sees its connection closed, as it would see a refused one.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if delay.is_zero() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    // Both directions run in this task, so aborting it (a cut) drops every socket and every byte in flight.
    tokio::join!(
        delayed_copy(client_read, server_write, delay),
        delayed_copy(server_read, client_write, delay),
    );
}

/// Copies `from` to `to`, writing each chunk `delay` after it was read, until `from` ends or `to` fails.
async fn delayed_copy(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    delay: Duration,
) {
    let (sender, mut receiver) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if sender
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = receiver.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use anyhow::ensure;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// How long a read may take before the test calls the connection hung.
    const READ_TIMEOUT: Duration = Duration::from_secs(10);

    /// An echo server on a loopback port: writes back whatever each connection sends.
    async fn echo_server() -> anyhow::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        Ok(addr)
    }

    /// Sends `message` and reads the same number of bytes back.
    async fn round_trip(socket: &mut TcpStream, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        socket.write_all(message).await?;
        let mut answer = vec![0; message.len()];
        tokio::time::timeout(READ_TIMEOUT, socket.read_exact(&mut answer)).await??;
        Ok(answer)
    }

    /// Reads until the peer closes; fails if data arrives or nothing happens in time. A reset counts as closed.
    async fn expect_closed(socket: &mut TcpStream) -> anyhow::Result<()> {
        let mut buf = [0; 64];
        match tokio::time::timeout(READ_TIMEOUT, socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Ok(()),
            Ok(Ok(n)) => anyhow::bail!("expected a closed connection, read {n} bytes"),
            Err(_) => anyhow::bail!("the connection stayed open for {READ_TIMEOUT:?}"),
        }
    }

    #[tokio::test]
    async fn forwards_cuts_and_restores() -> anyhow::Result<()> {
        let echo = echo_server().await?;
        let proxy = Proxy::start(echo).await?;
        ensure!(proxy.addr != echo && proxy.addr.ip().is_loopback());

        let mut first = TcpStream::connect(proxy.addr).await?;
        ensure!(round_trip(&mut first, b"hello").await? == b"hello");
        // Larger than a socket buffer, so the copy runs in several reads and writes.
        let big: Vec<u8> = (0..300_000u32).map(|n| (n % 251) as u8).collect();
        ensure!(round_trip(&mut first, &big).await? == big);
        ensure!(proxy.open_connections() == 1);

        proxy.cut();
        ensure!(proxy.is_cut());
        expect_closed(&mut first).await?;
        // New connections are accepted and closed at once, without reaching the server.
        let mut refused = TcpStream::connect(proxy.addr).await?;
        let _ = refused.write_all(b"anyone there?").await;
        expect_closed(&mut refused).await?;
        ensure!(proxy.open_connections() == 0);

        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr).await?;
        ensure!(round_trip(&mut again, b"back").await? == b"back");
        drop(proxy);
        expect_closed(&mut again).await?;
        Ok(())
    }

    #[tokio::test]
    async fn a_delayed_proxy_delivers_everything_late_in_order_and_still_cuts() -> anyhow::Result<()>
    {
        let echo = echo_server().await?;
        let delay = Duration::from_millis(150);
        let proxy = Proxy::start_with_delay(echo, delay).await?;
        let mut socket = TcpStream::connect(proxy.addr).await?;
        let started = std::time::Instant::now();
        ensure!(round_trip(&mut socket, b"hello").await? == b"hello");
        // There and back: twice the delay.
        ensure!(started.elapsed() >= 2 * delay, "{:?}", started.elapsed());
        let big: Vec<u8> = (0..300_000u32).map(|n| (n % 251) as u8).collect();
        ensure!(round_trip(&mut socket, &big).await? == big);
        proxy.cut();
        expect_closed(&mut socket).await?;
        Ok(())
    }
}
