//! The OAuth2 test server's packages are installed once, however many
//! threads and test binaries ask at the same time (`tests/common/idp.rs`).
//!
//! Runs one real `npm ci`, in a copy of the fixture in a temporary directory.
#![cfg(feature = "oauth2")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::idp::{fixture_dir, install, Installed};

const DIR_VAR: &str = "TOWER_BEARER_INSTALL_DIR";
const HELPER: &str = "install_from_another_process";

/// A second process's install: run by the test below, with the directory in
/// the environment.
#[test]
#[ignore = "a helper of concurrent_installs_run_npm_once"]
fn install_from_another_process() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let installed = install(Path::new(&dir)).unwrap();
    println!("installed: {installed:?}");
}

/// Removed on drop, so that a failed test leaves nothing behind.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn concurrent_installs_run_npm_once() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("tower-bearer-install-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(fixture_dir().join(file), dir.0.join(file)).unwrap();
    }

    // Two processes (this test binary, running the helper) and three threads.
    let exe = std::env::current_exe().unwrap();
    let processes: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", HELPER, "--ignored", "--nocapture"])
                .env(DIR_VAR, &dir.0)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let dir = dir.0.clone();
            std::thread::spawn(move || install(&dir))
        })
        .collect();

    let mut outcomes = Vec::new();
    for thread in threads {
        outcomes.push(thread.join().unwrap().unwrap());
    }
    for process in processes {
        let output = process.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let outcome = match stdout.lines().find(|line| line.starts_with("installed: ")) {
            Some("installed: Now") => Installed::Now,
            Some("installed: Already") => Installed::Already,
            other => panic!("the helper did not run: {other:?} in {stdout}"),
        };
        outcomes.push(outcome);
    }

    let installs = outcomes.iter().filter(|o| **o == Installed::Now).count();
    assert_eq!(installs, 1, "{outcomes:?}");
    assert!(dir.0.join("node_modules/oauth2-mock-server").is_dir());
    assert!(!dir.0.join(".install.tmp").exists());
    // Installed: the next call does nothing.
    assert_eq!(install(&dir.0).unwrap(), Installed::Already);
}

#[test]
fn a_failed_install_says_which_command_failed_and_why() {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "tower-bearer-install-broken-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join("package.json"), "{ not json").unwrap();
    std::fs::write(dir.0.join("package-lock.json"), "{}").unwrap();

    let error = install(&dir.0).unwrap_err();
    assert!(
        error.contains("`npm ci --no-audit --no-fund --silent`"),
        "{error}"
    );
    assert!(error.contains("failed"), "{error}");
    assert!(!dir.0.join("node_modules").exists());
    assert!(!dir.0.join(".install.tmp").exists());
}
