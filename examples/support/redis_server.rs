//! A local `redis-server` on a free port of 127.0.0.1, stopped on drop, for
//! the fleet example and tests. Not part of the crate's API.
//!
//! It keeps nothing on disk (`--save ""`, no append-only file), so a
//! restarted server starts empty.

// The example and the test each use only part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tower::BoxError;

/// How long a new server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts on a new port when another process took the free one first.
const ATTEMPTS: usize = 3;

/// A running `redis-server`; dropping it kills the process.
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts `redis-server` (from `$REDIS_SERVER`, or the one on `PATH`) on
    /// a free port and waits until it answers `PING`.
    pub fn start() -> Result<Self, BoxError> {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            match Self::start_once() {
                Ok(server) => return Ok(server),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| "redis-server did not start".into()))
    }

    fn start_once() -> Result<Self, BoxError> {
        // Free now; a race with another process is retried by `start`.
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let program = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let child = Command::new(&program)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run `{program}` ({e}): install it, e.g. `apt-get install redis-server`"
                )
            })?;
        let mut server = Self { child, port };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if server.ping() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                return Err(format!("redis-server on port {port} exited: {status}").into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server on port {port} did not answer within {START_TIMEOUT:?}"
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the server answers `PING` with `PONG`.
    pub fn ping(&self) -> bool {
        let answer = || -> std::io::Result<bool> {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
            stream.set_read_timeout(Some(Duration::from_secs(1)))?;
            stream.write_all(b"PING\r\n")?;
            let mut reply = [0; 7];
            stream.read_exact(&mut reply)?;
            Ok(&reply == b"+PONG\r\n")
        };
        answer().unwrap_or(false)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
