//! `FileToken` with real files in a temporary directory: rotation by rename
//! and by the kubelet's symlink swap, a re-read after a 401, files replaced
//! while they are read, and every kind of bad file.

use std::convert::Infallible;
use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_bearer::file::{self, ErrorKind};
use tower_bearer::{BearerAuthLayer, FileToken, TokenCache, TokenError, TokenErrorKind};

/// A directory of its own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let unique = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "tower-bearer-{name}-{}-{unique}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `content` beside `path`, then renames it over `path`: how Vault
/// agent and most tools replace a file.
fn replace(path: &Path, content: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The kubelet's atomic writer: `dir/token -> ..data/token`, and `..data` a
/// symlink to a timestamped directory, switched with a rename.
struct Projected {
    dir: PathBuf,
    version: usize,
}

impl Projected {
    fn new(dir: &Path, content: &str) -> Self {
        let mut projected = Self {
            dir: dir.to_owned(),
            version: 0,
        };
        projected.swap(content);
        std::os::unix::fs::symlink("..data/token", dir.join("token")).unwrap();
        projected
    }

    fn swap(&mut self, content: &str) {
        let old = format!("..2026_11_27_{}", self.version);
        self.version += 1;
        let new = format!("..2026_11_27_{}", self.version);
        std::fs::create_dir(self.dir.join(&new)).unwrap();
        std::fs::write(self.dir.join(&new).join("token"), content).unwrap();
        std::os::unix::fs::symlink(&new, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(self.dir.join(old));
    }

    fn path(&self) -> PathBuf {
        self.dir.join("token")
    }
}

/// The `file::Error` behind a cache's error.
fn file_error(error: &TokenError) -> &file::Error {
    error
        .source()
        .and_then(|source| source.downcast_ref::<file::Error>())
        .unwrap_or_else(|| panic!("not a file error: {error:?}"))
}

fn jwt(exp: u64) -> String {
    let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(r#"{"alg":"RS256"}"#),
        b64(&format!(
            r#"{{"sub":"system:serviceaccount:ns:sa","exp":{exp}}}"#
        ))
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(start_paused = true)]
async fn a_renamed_file_is_read_again_when_the_token_is_due() {
    let dir = TempDir::new("rename");
    let path = dir.path("token");
    std::fs::write(&path, "token-1\n").unwrap();
    let cache = TokenCache::new(FileToken::new(&path).default_lifetime(Duration::from_secs(60)));

    let token = cache.token().await.unwrap();
    assert_eq!(token.secret(), "token-1", "trimmed");
    replace(&path, "  token-2  \n");
    // Still fresh: the file is not read on every request.
    assert_eq!(cache.token().await.unwrap().secret(), "token-1");
    // Past its expiry, the next request waits for a new read.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(cache.token().await.unwrap().secret(), "token-2");
    assert_eq!(cache.stats().fetches, 2);
}

#[tokio::test(start_paused = true)]
async fn the_kubelet_symlink_swap_is_followed() {
    let dir = TempDir::new("symlink");
    let mut projected = Projected::new(&dir.0, "token-1");
    let cache =
        TokenCache::new(FileToken::new(projected.path()).default_lifetime(Duration::from_secs(60)));
    assert_eq!(cache.token().await.unwrap().secret(), "token-1");

    projected.swap("token-2");
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(cache.token().await.unwrap().secret(), "token-2");

    projected.swap("token-3");
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(cache.token().await.unwrap().secret(), "token-3");
}

#[tokio::test]
async fn a_401_makes_the_next_request_read_the_file_again() {
    let dir = TempDir::new("unauthorized");
    let mut projected = Projected::new(&dir.0, "token-1");
    // Long-lived: only the 401 can make it read the file again.
    let source = FileToken::new(projected.path()).default_lifetime(Duration::from_secs(3600));
    let mut client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(source))
        .service(service_fn(|request: Request<()>| async move {
            let status = if request.headers()[AUTHORIZATION] == "Bearer token-1" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            };
            let mut response = Response::new(request.headers()[AUTHORIZATION].clone());
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        }));

    let response = client.ready().await.unwrap().call(Request::new(())).await;
    assert_eq!(response.unwrap().status(), StatusCode::UNAUTHORIZED);
    projected.swap("token-2");
    let response = client.ready().await.unwrap().call(Request::new(())).await;
    let response = response.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "Bearer token-2");
}

/// Reads race a writer that keeps renaming new versions over the file, and
/// a waiting request gets one whole version, never part of two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_while_it_is_read_gives_one_whole_version() {
    let dir = TempDir::new("race");
    let path = dir.path("token");
    // Big enough that a read takes several syscalls.
    let version = |n: usize| char::from(b'a' + (n % 26) as u8).to_string().repeat(60_000);
    std::fs::write(&path, version(0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = std::thread::spawn({
        let (path, stop) = (path.clone(), stop.clone());
        move || {
            let mut n = 1;
            while !stop.load(Ordering::Relaxed) {
                replace(&path, version(n));
                n += 1;
            }
            n
        }
    });

    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        // A cold cache each time: each request waits on its own read.
        let cache = TokenCache::new(FileToken::new(&path));
        let token = cache.token().await.unwrap();
        let value = token.secret();
        assert_eq!(value.len(), 60_000);
        let first = value.as_bytes()[0];
        assert!(value.bytes().all(|b| b == first), "a torn read");
        seen.insert(first);
    }
    stop.store(true, Ordering::Relaxed);
    let versions = writer.join().unwrap();
    assert!(versions > 1, "the writer never ran");
    assert!(!seen.is_empty());
}

#[tokio::test]
async fn each_bad_file_is_a_typed_error() {
    let dir = TempDir::new("bad");
    type Make = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Make, ErrorKind)> = vec![
        ("missing", Box::new(|_| {}), ErrorKind::NotFound),
        (
            "dangling",
            Box::new(|p| std::os::unix::fs::symlink("..data/gone", p).unwrap()),
            ErrorKind::NotFound,
        ),
        (
            "empty",
            Box::new(|p| std::fs::write(p, "").unwrap()),
            ErrorKind::Empty,
        ),
        (
            "blank",
            Box::new(|p| std::fs::write(p, " \n\t\r\n").unwrap()),
            ErrorKind::Empty,
        ),
        (
            "oversized",
            Box::new(|p| std::fs::write(p, "x".repeat(FileToken::MAX_SIZE + 1)).unwrap()),
            ErrorKind::TooLarge,
        ),
        (
            "latin1",
            Box::new(|p| std::fs::write(p, b"tok\xe9n-s3cr3t").unwrap()),
            ErrorKind::NotUtf8,
        ),
        (
            "directory",
            Box::new(|p| std::fs::create_dir(p).unwrap()),
            ErrorKind::NotAFile,
        ),
        // Issue 21: a FIFO with no writer blocked a blocking-pool thread in
        // `open()` for ever, one per fetch.
        (
            "fifo",
            Box::new(|p| {
                let made = std::process::Command::new("mkfifo").arg(p).status();
                assert!(made.unwrap().success(), "mkfifo");
            }),
            ErrorKind::NotAFile,
        ),
        (
            "device",
            Box::new(|p| std::os::unix::fs::symlink("/dev/zero", p).unwrap()),
            ErrorKind::NotAFile,
        ),
    ];
    for (name, make, kind) in cases {
        let path = dir.path(name);
        make(&path);
        let error = TokenCache::new(FileToken::new(&path))
            .token()
            .await
            .unwrap_err();
        assert_eq!(error.kind(), TokenErrorKind::Fetch, "{name}");
        assert!(!error.is_permanent(), "{name}: a writer may put it back");
        let cause = file_error(&error);
        assert_eq!(cause.kind(), kind, "{name}: {cause}");
        assert_eq!(cause.path(), path);
        let shown = format!("{error} {error:?} {cause} {cause:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("xxxx"),
            "{shown}"
        );
    }

    // Exactly the limit is fine.
    let path = dir.path("limit");
    std::fs::write(&path, "y".repeat(FileToken::MAX_SIZE)).unwrap();
    let token = TokenCache::new(FileToken::new(&path))
        .token()
        .await
        .unwrap();
    assert_eq!(token.secret().len(), FileToken::MAX_SIZE);

    // A token that is not a header value is the cache's own error.
    let path = dir.path("newline");
    std::fs::write(&path, "token\nInjected: yes\n").unwrap();
    let error = TokenCache::new(FileToken::new(&path))
        .token()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::InvalidToken);
    assert!(!format!("{error} {error:?}").contains("Injected"));
}

#[tokio::test]
async fn a_jwt_expires_at_its_exp_capped_by_max_lifetime() {
    let dir = TempDir::new("jwt");
    let path = dir.path("token");

    std::fs::write(&path, jwt(unix_now() + 600)).unwrap();
    let before = Instant::now();
    let token = TokenCache::new(FileToken::new(&path))
        .token()
        .await
        .unwrap();
    let lifetime = token.expiry().unwrap() - before;
    assert!(
        lifetime > Duration::from_secs(595) && lifetime <= Duration::from_secs(601),
        "{lifetime:?}"
    );

    // An extended-expiration token valid for a year is read again hourly.
    std::fs::write(&path, jwt(unix_now() + 365 * 24 * 3600)).unwrap();
    let before = Instant::now();
    let token = TokenCache::new(FileToken::new(&path))
        .token()
        .await
        .unwrap();
    let lifetime = token.expiry().unwrap() - before;
    assert!(
        lifetime <= FileToken::DEFAULT_MAX_LIFETIME + Duration::from_secs(1)
            && lifetime > FileToken::DEFAULT_MAX_LIFETIME - Duration::from_secs(5),
        "{lifetime:?}"
    );

    // A JWT that has expired is a token that arrived expired.
    std::fs::write(&path, jwt(unix_now() - 10)).unwrap();
    let error = TokenCache::new(FileToken::new(&path))
        .token()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::Expired);

    // Anything else lives for the default lifetime.
    std::fs::write(&path, "hvs.opaque-vault-token").unwrap();
    let before = Instant::now();
    let token = TokenCache::new(FileToken::new(&path))
        .token()
        .await
        .unwrap();
    let lifetime = token.expiry().unwrap() - before;
    assert!(
        lifetime <= FileToken::DEFAULT_LIFETIME + Duration::from_secs(1)
            && lifetime > Duration::from_secs(295),
        "{lifetime:?}"
    );
}

#[test]
fn debug_shows_the_path_and_no_token() {
    let source = FileToken::new("/var/run/secrets/tokens/api-token");
    let debug = format!("{source:?}");
    assert!(
        debug.contains("/var/run/secrets/tokens/api-token"),
        "{debug}"
    );
    assert_eq!(
        source.path(),
        Path::new("/var/run/secrets/tokens/api-token")
    );
}
