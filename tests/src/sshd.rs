//! A real `sshd` on loopback for the SSH backend's tests (root only: it creates a test user).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test account's password (a fixed, non-secret test value).
pub const PASSWORD: &str = "byok-test-Passw0rd";
pub const USER: &str = "byoktest";

pub struct Sshd {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
    /// The client key whose public half is authorised (OpenSSH format, ed25519).
    pub private_key: String,
    /// `SHA256:…` of the current host key.
    pub fingerprint: String,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ensure_user() {
    let exists = Command::new("id")
        .arg(USER)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        let _ = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", USER])
            .status();
    }
    let mut child = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .expect("chpasswd (the SSH tests run as root; make test does)");
    use std::io::Write;
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{USER}:{PASSWORD}\n").as_bytes());
    assert!(
        child.wait().unwrap().success(),
        "could not set the test user's password"
    );
}

fn host_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join(format!("host_key_{}", uuid::Uuid::new_v4().simple()));
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key));
    let fp = run(Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(key.with_extension("pub")));
    let fp = fp.split_whitespace().nth(1).unwrap().to_string();
    (key, fp)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sshd {
    pub fn start() -> Self {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd missing: make test installs openssh-server"
        );
        ensure_user();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let client = dir.path().join("client_key");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&client));
        let auth = dir.path().join("authorized_keys");
        std::fs::copy(client.with_extension("pub"), &auth).unwrap();
        std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o644)).unwrap();
        let private_key = std::fs::read_to_string(&client).unwrap();
        let port = free_port();
        let (child, fingerprint) = spawn(dir.path(), port);
        Self {
            port,
            dir,
            child,
            private_key,
            fingerprint,
        }
    }

    /// A new client key of `kind` (`rsa`, `ecdsa`, `ed25519`) protected by `passphrase`, in
    /// the OpenSSH format or (with `pem`) the older PEM format, authorised for the test user.
    /// Returns the private key text.
    pub fn add_client_key(&self, kind: &str, passphrase: &str, pem: bool) -> String {
        use std::io::Write;
        let key = self
            .dir
            .path()
            .join(format!("client_{kind}_{}", uuid::Uuid::new_v4().simple()));
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", "byok-test", "-f"])
            .arg(&key);
        if kind == "rsa" {
            cmd.args(["-b", "3072"]);
        }
        if pem {
            cmd.args(["-m", "PEM"]);
        }
        run(&mut cmd);
        let public = std::fs::read(key.with_extension("pub")).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .unwrap()
            .write_all(&public)
            .unwrap();
        std::fs::read_to_string(&key).unwrap()
    }

    /// Restarts on the same port with a new host key.
    pub fn restart_with_new_host_key(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, fingerprint) = spawn(self.dir.path(), self.port);
        self.child = child;
        self.fingerprint = fingerprint;
    }
}

fn spawn(dir: &Path, port: u16) -> (Child, String) {
    let (key, fingerprint) = host_key(dir);
    let config = dir.join(format!("sshd_config_{port}"));
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}/sshd.pid\n\
             PubkeyAuthentication yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nAuthorizedKeysFile {}/authorized_keys\nAllowUsers {USER}\n\
             MaxStartups 100\nMaxSessions 50\n",
            key.display(),
            dir.display(),
            dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "sshd did not start: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, fingerprint)
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
