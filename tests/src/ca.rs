//! [`TestCa`]: a certificate authority made per test run with rcgen, and a server certificate it signed for
//! loopback, as PEM files: the SMTP relay and the IRC server of the tests present it, and the server under test
//! trusts it through its `ca-file` settings.

use std::path::PathBuf;

/// A CA and a certificate it issued for 127.0.0.1, as PEM files in a temporary directory.
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// A fresh CA and server certificate.
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "commandpost test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("the CA certificate");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("a server key");
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        let cert = params
            .signed_by(&key, &issuer)
            .expect("the server certificate");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("writing the CA");
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("writing the certificate");
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("writing the key");
        TestCa { dir }
    }

    /// The CA certificate, for `ca-file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (for `localhost` and `127.0.0.1`) the CA signed.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The server certificate's private key (PKCS#8 PEM).
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}
