//! The real third-party OAuth2 server of `tests/fixtures/oauth2-server` (the
//! npm package `oauth2-mock-server` and a protected resource that verifies
//! its tokens), started per test and stopped on drop.
//!
//! Its npm packages are installed on first use, once, however many test
//! threads and test binaries ask at the same time: see [`install`].

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tower::{BoxError, Service, ServiceExt};
use tower_bearer::oauth2::ClientCredentials;
use tower_bearer::BearerAuth;

pub const CLIENT_ID: &str = "orders-service";
pub const CLIENT_SECRET: &str = "correct horse:battery/staple";

/// How long `npm ci` may take before it is killed.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long to wait for another process's install: the holder's own bound,
/// and some.
const LOCK_TIMEOUT: Duration = Duration::from_secs(330);

/// The Node servers, stopped on drop.
pub struct MockIdp {
    child: Child,
    pub token_url: String,
    pub protected_url: String,
    pub stats_url: String,
}

impl MockIdp {
    /// Starts the servers with tokens of `token_lifetime` seconds.
    pub fn start(token_lifetime: u64) -> Self {
        Self::start_with(token_lifetime, &[])
    }

    /// [`MockIdp::start`], with more environment for `server.mjs` (fault
    /// injection, `exp` rounding: see its header).
    pub fn start_with(token_lifetime: u64, env: &[(&str, String)]) -> Self {
        let env: Vec<(&str, String)> = [
            ("CLIENT_ID", CLIENT_ID.to_owned()),
            ("CLIENT_SECRET", CLIENT_SECRET.to_owned()),
            ("TOKEN_LIFETIME", token_lifetime.to_string()),
        ]
        .into_iter()
        .chain(env.iter().cloned())
        .collect();
        let (child, urls) = start_node(&fixture_dir(), &env);
        let url = |name: &str| urls[name].as_str().expect("a URL").to_owned();
        Self {
            token_url: url("token_url"),
            protected_url: url("protected_url"),
            stats_url: url("stats_url"),
            child,
        }
    }

    /// The server's counters (`/stats`).
    pub async fn stats(&self) -> Value {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let response = client.get(self.stats_url.parse().unwrap()).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    /// A client-credentials source with the credentials the server accepts.
    pub fn source(&self) -> ClientCredentials {
        ClientCredentials::new(&self.token_url, CLIENT_ID, CLIENT_SECRET)
    }
}

impl Drop for MockIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs `fixture`'s packages if needed, runs `node server.mjs` there
/// with `env`, and returns it with the JSON object it prints on its first
/// line once it listens.
pub fn start_node(fixture: &Path, env: &[(&str, String)]) -> (Child, Value) {
    start_node_script(fixture, "server.mjs", env)
}

/// [`start_node`] with another script of the fixture.
pub fn start_node_script(fixture: &Path, script: &str, env: &[(&str, String)]) -> (Child, Value) {
    if let Err(error) = install(fixture) {
        panic!(
            "the test server in {} could not be installed: {error}",
            fixture.display()
        );
    }
    let mut child = Command::new("node")
        .arg(script)
        .current_dir(fixture)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `node` (Node 20.19 or later is needed): {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    // EOF (node failed to start) ends the read as well; the timeout is
    // only a guard against a node that neither starts nor exits.
    let (sent, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sent.send(line);
    });
    let line = received
        .recv_timeout(Duration::from_secs(60))
        .expect("the test server did not start within a minute");
    let urls: Value = serde_json::from_str(&line)
        .unwrap_or_else(|_| panic!("the test server did not start: {line:?}"));
    (child, urls)
}

/// `tests/fixtures/oidc-provider`.
pub fn oidc_provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc-provider")
}

/// A test server's process, stopped on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tests/fixtures/oauth2-server`.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oauth2-server")
}

/// What [`install`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// The packages were there already (or another caller installed them
    /// while this one waited for the lock).
    Already,
    /// This call ran `npm ci`.
    Now,
}

/// Runs `npm ci` in `fixture` (any fixture directory with a `package.json`
/// and its lock file) unless its packages are installed.
///
/// Safe when several threads and processes call it at once: they take an
/// exclusive `flock` on `fixture/.install.lock` (released by the kernel if
/// the holder dies), look again once they hold it, and `npm ci` runs in
/// `fixture/.install.tmp`, whose `node_modules` is renamed into place only
/// when it is complete. So `node_modules` never exists half-installed, and
/// the check outside the lock is enough. Every wait is bounded.
pub fn install(fixture: &Path) -> Result<Installed, String> {
    let installed = || dependencies_present(fixture);
    if installed() {
        return Ok(Installed::Already);
    }
    let lock_path = fixture.join(".install.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    lock_within(&lock, &lock_path, LOCK_TIMEOUT)?;
    // Unlocked when `lock` is dropped, on every path out.
    if installed() {
        return Ok(Installed::Already);
    }

    let staging = fixture.join(".install.tmp");
    // Only a holder of the lock writes here: anything found is left over
    // from a holder that died.
    remove_if_present(&staging)?;
    let result = npm_ci(fixture, &staging).and_then(|()| {
        let target = fixture.join("node_modules");
        // An earlier, incomplete `node_modules` not made by us (a manual
        // `npm ci` that was interrupted, say).
        remove_if_present(&target)?;
        fs::rename(staging.join("node_modules"), &target).map_err(|e| {
            format!(
                "cannot move the installed packages into {}: {e}",
                target.display()
            )
        })
    });
    let _ = fs::remove_dir_all(&staging);
    result.map(|()| Installed::Now)
}

/// Takes `lock`, waiting at most `timeout` for another holder.
// `File::try_lock` is Rust 1.89: the tests build with a newer toolchain than
// the library's MSRV (their dev-dependencies need 1.88 already).
#[allow(clippy::incompatible_msrv)]
fn lock_within(lock: &File, path: &Path, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "another install held {} for more than {timeout:?}",
                    path.display()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", path.display()))
            }
        }
    }
}

/// `npm ci` of `fixture`'s lock file, in `staging`.
fn npm_ci(fixture: &Path, staging: &Path) -> Result<(), String> {
    const COMMAND: &str = "npm ci --no-audit --no-fund --silent";
    fs::create_dir_all(staging).map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    for file in ["package.json", "package-lock.json"] {
        fs::copy(fixture.join(file), staging.join(file))
            .map_err(|e| format!("cannot copy {file} into {}: {e}", staging.display()))?;
    }
    // Output to files, not pipes: nothing to drain while we wait.
    let log = |name: &str| {
        File::create(staging.join(name)).map_err(|e| format!("cannot create {name}: {e}"))
    };
    let mut child = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(staging)
        .stdin(Stdio::null())
        .stdout(log("npm.stdout")?)
        .stderr(log("npm.stderr")?)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run `{COMMAND}` in {}: {e} (npm comes with Node 20.19 or later)",
                staging.display()
            )
        })?;
    let deadline = Instant::now() + INSTALL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{COMMAND}` in {} did not finish within {INSTALL_TIMEOUT:?}",
                    staging.display()
                ));
            }
            Err(e) => return Err(format!("cannot wait for `{COMMAND}`: {e}")),
        }
    };
    if status.success() && dependencies_present(staging) {
        return Ok(());
    }
    let stderr = fs::read_to_string(staging.join("npm.stderr")).unwrap_or_default();
    Err(format!(
        "`{COMMAND}` in {} failed ({status}): {}",
        staging.display(),
        stderr.trim()
    ))
}

/// Whether every dependency in `dir/package.json` is in `dir/node_modules`.
fn dependencies_present(dir: &Path) -> bool {
    let Ok(manifest) = fs::read(dir.join("package.json")) else {
        return false;
    };
    let Ok(manifest) = serde_json::from_slice::<Value>(&manifest) else {
        return false;
    };
    manifest["dependencies"]
        .as_object()
        .is_some_and(|dependencies| {
            dependencies
                .keys()
                .all(|name| dir.join("node_modules").join(name).is_dir())
        })
}

fn remove_if_present(path: &Path) -> Result<(), String> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// A plain hyper-util client, as a user's would be.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One GET of the protected resource through `client`: its status and JSON
/// body.
pub async fn get(
    client: &mut BearerAuth<HttpClient>,
    url: &str,
) -> Result<(StatusCode, Value), BoxError> {
    let request = Request::get(url).body(Full::default())?;
    let response = client.ready().await?.call(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body)?))
}
