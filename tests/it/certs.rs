//! Test certificates, made with the openssl command line as an operator would: CAs, and keys with
//! certificates they sign, for a server (localhost and 127.0.0.1) or a client (by common name).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn run(program: &str, dir: &Path, args: &[&str]) {
    let output =
        Command::new(program).args(args).current_dir(dir).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA in `dir`: `{name}.key` and `{name}.pem`, valid two days.
pub struct Ca {
    dir: PathBuf,
    name: String,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let (key, pem, subject) = (format!("{name}.key"), format!("{name}.pem"), format!("/CN=index766 test {name}"));
        let mut args = vec!["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject];
        args.extend(["-keyout", &key, "-out", &pem, "-addext", "basicConstraints=critical,CA:TRUE"]);
        run("openssl", dir, &args);
        Ca { dir: dir.into(), name: name.into() }
    }

    pub fn pem(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// Signs the request file `request` into `certificate`, for two days.
    pub fn sign(&self, request: &str, certificate: &str, extra: &[&str]) {
        let (pem, key) = (format!("{}.pem", self.name), format!("{}.key", self.name));
        let common = ["x509", "-req", "-in", request, "-CA", &pem, "-CAkey", &key, "-CAcreateserial"];
        run("openssl", &self.dir, &[&common[..], &["-days", "2", "-out", certificate], extra].concat());
    }

    /// A key (mode 0600, as libpq insists) and a certificate this CA signs for `common_name`, as
    /// `{file}.key` and `{file}.pem`; a server's names localhost and 127.0.0.1.
    pub fn issue(&self, common_name: &str, file: &str, server: bool) -> (PathBuf, PathBuf) {
        let (key, csr, pem, ext) =
            (format!("{file}.key"), format!("{file}.csr"), format!("{file}.pem"), format!("{file}.ext"));
        let subject = format!("/CN={common_name}");
        run(
            "openssl",
            &self.dir,
            &["req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key, "-out", &csr],
        );
        let extensions = match server {
            true => "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            false => "extendedKeyUsage=clientAuth\n",
        };
        std::fs::write(self.dir.join(&ext), extensions).unwrap();
        self.sign(&csr, &pem, &["-extfile", &ext]);
        let key = self.dir.join(key);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        (key, self.dir.join(pem))
    }
}
