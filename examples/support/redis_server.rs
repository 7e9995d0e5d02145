//! A local `redis-server` on a free port of 127.0.0.1, stopped on drop, for
//! the fleet example and tests, and the store's own tests (which kill and
//! restart it on its port). Not part of the crate's API.
//!
//! It keeps nothing on disk (`--save ""`, no append-only file), so a
//! restarted server starts empty.
//!
//! It also starts a server that speaks only TLS (`start_tls`, with
//! certificates the caller made), and the nodes of a Redis Cluster
//! (`start_cluster_node`, then `create_cluster`, which runs
//! `redis-cli --cluster create`).

// Each user takes only part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tower::BoxError;

/// How long a new server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts on a new port when another process took the free one first.
const ATTEMPTS: usize = 3;

/// A running `redis-server`; dropping it kills the process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    tls: bool,
}

/// The PEM files of a server that speaks TLS.
pub struct TlsFiles {
    /// The CA that signed the server's certificate, and the clients'.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Whether clients must present a certificate signed by `ca`.
    pub client_certs: bool,
}

impl RedisServer {
    /// Starts `redis-server` (from `$REDIS_SERVER`, or the one on `PATH`) on
    /// a free port and waits until it answers `PING`.
    pub fn start() -> Result<Self, BoxError> {
        Self::start_with(Self::start_on)
    }

    /// Starts a server that speaks only TLS, with `tls`'s files and any
    /// `extra` configuration (`["--user", "fleet", "on", ">pass", ...]`),
    /// on a free port, and waits until it accepts connections.
    pub fn start_tls(tls: &TlsFiles, extra: &[&str]) -> Result<Self, BoxError> {
        Self::start_with(|port| {
            let path = |p: &Path| p.to_string_lossy().into_owned();
            let mut args = vec![
                "--port".to_owned(),
                "0".to_owned(),
                "--tls-port".to_owned(),
                port.to_string(),
                "--tls-cert-file".to_owned(),
                path(&tls.cert),
                "--tls-key-file".to_owned(),
                path(&tls.key),
                "--tls-ca-cert-file".to_owned(),
                path(&tls.ca),
                "--tls-auth-clients".to_owned(),
                if tls.client_certs { "yes" } else { "no" }.to_owned(),
            ];
            args.extend(extra.iter().map(|arg| (*arg).to_owned()));
            Self::spawn(port, &args, true)
        })
    }

    /// Starts a node of a Redis Cluster (not yet part of one: see
    /// `create_cluster`), keeping its cluster state file in `dir`. Its
    /// peers judge it failed after 1 s without an answer.
    pub fn start_cluster_node(dir: &Path) -> Result<Self, BoxError> {
        Self::start_with(|port| {
            let file = dir.join(format!("nodes-{port}.conf"));
            let args = [
                "--port".to_owned(),
                port.to_string(),
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-config-file".to_owned(),
                file.to_string_lossy().into_owned(),
                "--cluster-node-timeout".to_owned(),
                "1000".to_owned(),
                // Replicas sync at once, not after the default 5 s.
                "--repl-diskless-sync-delay".to_owned(),
                "0".to_owned(),
                "--dir".to_owned(),
                dir.to_string_lossy().into_owned(),
            ];
            Self::spawn(port, &args, false)
        })
    }

    fn start_with(start: impl Fn(u16) -> Result<Self, BoxError>) -> Result<Self, BoxError> {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            // Free now; a race with another process is retried. (The
            // listener is dropped at the end of this statement, so the
            // port is free again before the server binds it.)
            let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
            match start(port) {
                Ok(server) => return Ok(server),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| "redis-server did not start".into()))
    }

    /// Starts `redis-server` on `port` (a killed server's, to restart it
    /// empty) and waits until it answers `PING`.
    pub fn start_on(port: u16) -> Result<Self, BoxError> {
        Self::spawn(port, &["--port".to_owned(), port.to_string()], false)
    }

    fn spawn(port: u16, args: &[String], tls: bool) -> Result<Self, BoxError> {
        let program = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let child = Command::new(&program)
            .args(["--bind", "127.0.0.1"])
            .args(args)
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
        let mut server = Self {
            child: Some(child),
            port,
            tls,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // A TLS server is ready once it accepts connections.
            let ready = if tls {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            } else {
                server.ping()
            };
            if ready {
                return Ok(server);
            }
            if let Some(status) = server
                .child
                .as_mut()
                .map(Child::try_wait)
                .transpose()?
                .flatten()
            {
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

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (at once, as a crash would); it keeps nothing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this (plain) server and returns its output.
    pub fn cli(&self, args: &[&str]) -> Result<String, BoxError> {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run `redis-cli` ({e}): it comes with redis-server"))?;
        if !output.status.success() {
            return Err(format!("redis-cli {args:?}: {}", output.status).into());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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

/// Makes one Redis Cluster of `nodes` (started with `start_cluster_node`)
/// with `replicas` replicas per primary, with `redis-cli --cluster create`,
/// and waits until every node says the cluster is ok and every replica is
/// in sync.
pub fn create_cluster(nodes: &[&RedisServer], replicas: usize) -> Result<(), BoxError> {
    let mut create = Command::new("redis-cli");
    create.arg("--cluster").arg("create");
    create.args(nodes.iter().map(|node| node.address()));
    create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
    let output = create.stdin(Stdio::null()).output()?;
    if !output.status.success() {
        return Err(format!(
            "redis-cli --cluster create: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        )
        .into());
    }
    let deadline = Instant::now() + START_TIMEOUT;
    for node in nodes {
        // Ok, and every replica in sync with its primary.
        let ready = || -> Result<bool, BoxError> {
            let role = node.cli(&["ROLE"])?;
            Ok(node.cli(&["CLUSTER", "INFO"])?.contains("cluster_state:ok")
                && (!role.starts_with("slave") || role.contains("connected")))
        };
        while !ready()? {
            if Instant::now() > deadline {
                return Err("the cluster did not become ok".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
