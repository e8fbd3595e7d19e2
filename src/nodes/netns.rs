//! Connecting to a port on the loopback of a pod's network namespace.
//!
//! The agent probes pods on `127.0.0.1` inside their own namespace instead of on a bridge
//! address: it works the same on every host, needs no published port, and keeps probe traffic
//! off the network. The connect runs on a thread of its own that enters the namespace
//! (`setns`), so a thread left in a pod's namespace by a failure can never serve anything else.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// What a probe checks on the pod's loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A TCP connection opens.
    Tcp { port: u16 },
    /// An HTTP GET answers with a status from 200 to 399.
    Http { port: u16, path: String, headers: Vec<(String, String)> },
}

/// Runs `check` in the network namespace of process `pid`; `Ok(())` when it passed, otherwise
/// why it failed, in words for a status.
pub fn run(pid: i64, check: &Check, timeout: Duration) -> Result<(), String> {
    let check = check.clone();
    in_namespace(pid, move || {
        let port = match &check {
            Check::Tcp { port } | Check::Http { port, .. } => *port,
        };
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut stream = TcpStream::connect_timeout(&address, timeout)
            .map_err(|e| format!("connecting to port {port} failed: {e}"))?;
        let Check::Http { path, headers, .. } = &check else { return Ok(()) };
        stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: berth-probe\r\nConnection: close\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).map_err(|e| format!("sending the request failed: {e}"))?;
        let mut head = [0u8; 64];
        let mut read = 0;
        while read < 12 {
            match stream.read(&mut head[read..]) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) => return Err(format!("no answer on port {port}: {e}")),
            }
        }
        let line = String::from_utf8_lossy(&head[..read]);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("port {port} did not answer HTTP"))?;
        if (200..400).contains(&status) { Ok(()) } else { Err(format!("HTTP GET {path} answered {status}")) }
    })
}

/// A connection to `port` on the loopback of process `pid`'s network namespace (a
/// port-forward's): the socket stays in that namespace after the thread that made it ends.
pub fn connect(pid: i64, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    in_namespace(pid, move || {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        TcpStream::connect_timeout(&address, timeout).map_err(|e| format!("connecting to port {port} failed: {e}"))
    })
}

/// Runs `work` on a thread of its own inside process `pid`'s network namespace.
fn in_namespace<T: Send + 'static>(
    pid: i64,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let handle = std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || -> Result<T, String> {
            let namespace = std::fs::File::open(format!("/proc/{pid}/ns/net"))
                .map_err(|e| format!("the pod's network namespace is gone: {e}"))?;
            // SAFETY: setns on a valid namespace file descriptor changes only this thread's
            // namespace; the thread ends when this closure returns.
            if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!(
                    "entering the pod's network namespace failed: {}",
                    std::io::Error::last_os_error()
                ));
            }
            work()
        })
        .map_err(|e| format!("starting a thread in the pod's network namespace failed: {e}"))?;
    handle.join().unwrap_or_else(|_| Err("the thread in the pod's network namespace panicked".into()))
}
