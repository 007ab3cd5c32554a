//! Fernet interoperability with Python's `cryptography.fernet`, both directions.

use byok_core::ports::SecretCipher;
use byok_crypto::FernetKeyRing;
use secrecy::{ExposeSecret, SecretString};

use byok_tests::run_python as python;

#[test]
fn python_encrypts_rust_decrypts() {
    let key = python(
        "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())",
        &[],
    );
    let token = python(
        "import sys; from cryptography.fernet import Fernet; \
         print(Fernet(sys.argv[1].encode()).encrypt(sys.argv[2].encode()).decode())",
        &[&key, "sk-from-python-é"],
    );
    let ring = FernetKeyRing::parse(&SecretString::from(key)).unwrap();
    assert_eq!(
        ring.decrypt(&token).unwrap().expose_secret(),
        "sk-from-python-é"
    );
}

#[test]
fn rust_encrypts_python_decrypts() {
    let key = FernetKeyRing::generate_key();
    let ring = FernetKeyRing::parse(&key).unwrap();
    let token = ring
        .encrypt(&SecretString::from("sk-from-rust-ü".to_string()))
        .unwrap();
    let plain = python(
        "import sys; from cryptography.fernet import Fernet; \
         sys.stdout.buffer.write(Fernet(sys.argv[1].encode()).decrypt(sys.argv[2].encode()))",
        &[key.expose_secret(), &token],
    );
    assert_eq!(plain, "sk-from-rust-ü");
}

#[test]
fn python_multifernet_reads_our_rotated_ring() {
    // A ring "new,old" as the service uses it during rotation; Python's MultiFernet with the
    // same keys in the same order decrypts what either wrote.
    let old = FernetKeyRing::generate_key();
    let new = FernetKeyRing::generate_key();
    let legacy = python(
        "import sys; from cryptography.fernet import Fernet; \
         print(Fernet(sys.argv[1].encode()).encrypt(b'sk-legacy').decode())",
        &[old.expose_secret()],
    );
    let ring = FernetKeyRing::parse(&SecretString::from(format!(
        "{},{}",
        new.expose_secret(),
        old.expose_secret()
    )))
    .unwrap();
    assert_eq!(ring.decrypt(&legacy).unwrap().expose_secret(), "sk-legacy");
    assert!(!ring.is_current(&legacy));
}
