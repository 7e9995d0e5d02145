//! The built-in client through a real proxy: Debian's tinyproxy, started on
//! a free loopback port with a configuration this test writes, tunnelling
//! (`CONNECT`) to an https token endpoint whose certificate chains to a test
//! CA. One test: the proxy environment variables are process-wide.
//!
//! tinyproxy belongs to the full suite (`cargo test --all-features`, which
//! `.ci/run` runs after installing it). Under the README's plain `cargo
//! test` on a machine without it, the test says so and passes; under CI
//! (`CI` set) a missing tinyproxy fails it.

#[path = "common/https_idp.rs"]
mod https_idp;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tower_bearer::oauth2::{ClientCredentials, Proxy, RefreshToken};
use tower_bearer::TokenCache;

/// A tinyproxy process, killed on drop.
struct Tinyproxy {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: Dir,
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tinyproxy {
    /// The installed tinyproxy, if any.
    fn binary() -> Option<&'static str> {
        let installed = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists());
        if installed.is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "tinyproxy is not installed (.ci/run installs it)"
            );
            eprintln!("skipped: tinyproxy is not installed (apt-get install tinyproxy)");
        }
        installed
    }

    async fn start(binary: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("tower-bearer-tinyproxy-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("tinyproxy.log");
        let config = dir.join("tinyproxy.conf");
        // No `ConnectPort` line: CONNECT to any port (the token endpoint's
        // is a free one).
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 8\nAllow 127.0.0.1\n\
                 LogLevel Info\nLogFile \"{}\"\nPidFile \"{}\"\n",
                log.display(),
                dir.join("tinyproxy.pid").display()
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy starts");
        // Wait until it accepts connections.
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Tinyproxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: Dir(dir),
        }
    }

    /// How many CONNECT requests the proxy has logged.
    fn tunnels(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("CONNECT localhost:"))
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_tunnel_through_the_proxy_the_app_names() {
    let idp = https_idp::start(rustls::crypto::aws_lc_rs::default_provider()).await;
    let Some(binary) = Tinyproxy::binary() else {
        return;
    };
    let proxy = Tinyproxy::start(binary).await;
    let fetch = |proxy: Option<Proxy>| {
        let mut source = ClientCredentials::try_new(&idp.url, "id", "secret")
            .unwrap()
            .add_root_certificate_pem(&idp.ca_pem);
        if let Some(proxy) = proxy {
            source = source.proxy(proxy);
        }
        async move {
            TokenCache::new(source)
                .token()
                .await
                .map(|t| t.secret().to_owned())
        }
    };

    // Named explicitly.
    let token = fetch(Some(Proxy::Url(proxy.url.clone()))).await;
    assert_eq!(token.unwrap(), "tls-token");
    assert_eq!(proxy.tunnels(), 1);
    // The refresh-token grant takes the same setting.
    let refresh = RefreshToken::try_new(&idp.url, "id", "secret", "rt-0")
        .unwrap()
        .add_root_certificate_pem(&idp.ca_pem)
        .proxy(Proxy::Url(proxy.url.clone()));
    let token = TokenCache::new(refresh).token().await.unwrap();
    assert_eq!(token.secret(), "tls-token");
    assert_eq!(proxy.tunnels(), 2);

    // From the environment, as curl and reqwest read it.
    std::env::set_var("HTTPS_PROXY", &proxy.url);
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    assert_eq!(fetch(None).await.unwrap(), "tls-token");
    assert_eq!(proxy.tunnels(), 3);

    // The application opts out: directly to the endpoint.
    assert_eq!(fetch(Some(Proxy::Direct)).await.unwrap(), "tls-token");
    assert_eq!(proxy.tunnels(), 3);

    // NO_PROXY names the host.
    std::env::set_var("NO_PROXY", "localhost");
    assert_eq!(fetch(None).await.unwrap(), "tls-token");
    assert_eq!(proxy.tunnels(), 3);

    // A proxy that is not there: the fetch fails, it does not go direct.
    std::env::remove_var("NO_PROXY");
    std::env::set_var("HTTPS_PROXY", "http://127.0.0.1:9");
    let error = fetch(None).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("cannot reach the token endpoint"),
        "{error}"
    );
    std::env::remove_var("HTTPS_PROXY");
    assert_eq!(idp.answered.load(std::sync::atomic::Ordering::SeqCst), 5);
}
