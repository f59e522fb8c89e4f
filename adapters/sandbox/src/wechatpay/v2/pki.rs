//! The certificates of APIv2's mutual TLS (`/secapi/...`), made at start-up:
//!
//! * a "WeChat" CA and the merchant API certificate it issues (`apiclient_cert.pem`: RSA, the
//!   merchant's own API key, `CN` = mchid) — what WeChat checks a refund's client certificate
//!   against;
//! * a sandbox CA and the HTTPS server certificate it issues for `localhost`, `127.0.0.1` and
//!   `::1` — WeChat's server certificate chains to public roots, the sandbox's cannot, so the
//!   merchant is given this CA to trust.
//!
//! The CAs and the server key are ECDSA P-256 (instant to generate); only the merchant's key is
//! RSA, as WeChat issues it.
//!
//! WeChat's front end is nginx with `ssl_verify_client optional`: the handshake succeeds with any
//! client certificate or none, and the HTTP answer says what was wrong (a 400 page). The sandbox
//! does the same: [`AnyClientCert`] lets the handshake through (still checking that the client
//! holds the certificate's key), and the refund handler judges the certificate with
//! [`SecapiPki::client_verifier`].

use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, Months, Timelike, Utc};
use rand::Rng;
use rsa::RsaPrivateKey;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::wechatpay::keys::x509_time;

/// The mutual-TLS material of one simulated merchant.
pub(crate) struct SecapiPki {
    /// `apiclient_cert.pem`.
    pub client_cert_pem: String,
    /// Its serial (upper hex, 40 characters): the v3 `serial_no` too.
    pub client_serial: String,
    /// The CA a client trusts to reach the sandbox's HTTPS port.
    pub server_ca_pem: String,
    /// Serves the sandbox's certificate and asks for a client certificate (any, or none).
    pub server_config: Arc<ServerConfig>,
    /// Whether a client certificate is one of the WeChat CA's, valid now.
    pub client_verifier: Arc<dyn ClientCertVerifier>,
}

fn dn(pairs: &[(rcgen::DnType, &str)]) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    for (t, v) in pairs {
        dn.push(t.clone(), *v);
    }
    dn
}

fn ca_params(common_name: &str, now: DateTime<Utc>) -> Result<rcgen::CertificateParams, String> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = dn(&[
        (rcgen::DnType::CountryName, "CN"),
        (
            rcgen::DnType::OrganizationName,
            "Tenpay.com (paystream sandbox)",
        ),
        (rcgen::DnType::CommonName, common_name),
    ]);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.not_before = x509_time!(now - Duration::days(1));
    let until = now
        .checked_add_months(Months::new(120))
        .ok_or("validity end out of range")?;
    params.not_after = x509_time!(until);
    Ok(params)
}

/// 20 random bytes, the first in 1..=0x7f so DER neither drops nor pads it: 40 hex characters.
fn serial() -> [u8; 20] {
    let mut serial = [0u8; 20];
    rand::thread_rng().fill(&mut serial[..]);
    serial[0] = 1 + serial[0] % 0x7f;
    serial
}

pub(crate) fn generate(
    mchid: &str,
    merchant_key: &RsaPrivateKey,
    now: DateTime<Utc>,
) -> Result<SecapiPki, String> {
    let err = |what: &str| {
        let what = what.to_string();
        move |e: rcgen::Error| format!("{what}: {e}")
    };

    // WeChat's CA and the merchant API certificate.
    let wechat_ca_key = rcgen::KeyPair::generate().map_err(err("CA key"))?;
    let wechat_ca =
        rcgen::CertifiedIssuer::self_signed(ca_params("Tenpay.com Root CA", now)?, wechat_ca_key)
            .map_err(err("WeChat CA"))?;
    let pkcs8 = crate::wechatpay::keys::private_key_pem(merchant_key);
    let merchant_public =
        rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
            .map_err(err("merchant key"))?;
    let serial = serial();
    let mut client = rcgen::CertificateParams::default();
    client.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    client.distinguished_name = dn(&[
        (rcgen::DnType::CountryName, "CN"),
        (rcgen::DnType::OrganizationName, "微信商户系统"),
        (rcgen::DnType::OrganizationalUnitName, "paystream sandbox"),
        (rcgen::DnType::CommonName, mchid),
    ]);
    client.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    client.not_before = x509_time!(now - Duration::days(1));
    let until = now
        .checked_add_months(Months::new(60))
        .ok_or("validity end out of range")?;
    client.not_after = x509_time!(until);
    let client_cert = client
        .signed_by(&merchant_public, &wechat_ca)
        .map_err(err("merchant certificate"))?;

    // The sandbox's CA and HTTPS server certificate.
    let server_ca_key = rcgen::KeyPair::generate().map_err(err("CA key"))?;
    let server_ca = rcgen::CertifiedIssuer::self_signed(
        ca_params("paystream sandbox secapi CA", now)?,
        server_ca_key,
    )
    .map_err(err("sandbox CA"))?;
    let server_key = rcgen::KeyPair::generate().map_err(err("server key"))?;
    let mut server = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(err("server names"))?;
    server.distinguished_name = dn(&[(rcgen::DnType::CommonName, "localhost")]);
    server.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = x509_time!(now - Duration::days(1));
    let until = now
        .checked_add_months(Months::new(12))
        .ok_or("validity end out of range")?;
    server.not_after = x509_time!(until);
    let server_cert = server
        .signed_by(&server_key, &server_ca)
        .map_err(err("server certificate"))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(wechat_ca.der().clone())
        .map_err(|e| format!("client CA: {e}"))?;
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(Arc::new(AnyClientCert(client_verifier.clone())))
        .with_single_cert(vec![server_cert.der().clone()], key)
        .map_err(|e| format!("server certificate: {e}"))?;
    // axum serves HTTP/1.1 only (its `http2` feature is off in this workspace).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(SecapiPki {
        client_cert_pem: client_cert.pem(),
        client_serial: hex::encode_upper(serial),
        server_ca_pem: server_ca.pem(),
        server_config: Arc::new(config),
        client_verifier,
    })
}

/// nginx's `ssl_verify_client optional`: the handshake takes any client certificate (or none),
/// but the client must still prove it holds the certificate's key. Whether the certificate is
/// WeChat's is decided per request, with the wrapped verifier.
#[derive(Debug)]
struct AnyClientCert(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The `CN` of a DER certificate's subject, if it has one and it is text.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use paystream_wechatpay::v3::keys::load_certificate_pem;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn the_merchant_certificate_is_the_merchant_keys_with_cn_mchid() {
        let key = crate::wechatpay::keys::rsa_2048();
        let pki = generate("1230000109", &key, Utc::now()).unwrap();
        let parsed = load_certificate_pem(&pki.client_cert_pem).unwrap();
        assert_eq!(parsed.serial_no, pki.client_serial);
        assert_eq!(parsed.serial_no.len(), 40);
        assert_eq!(parsed.public_key, key.to_public_key());
        let der = CertificateDer::from_pem_slice(pki.client_cert_pem.as_bytes()).unwrap();
        assert_eq!(common_name(&der).as_deref(), Some("1230000109"));
        assert!(pki.server_ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki
            .client_verifier
            .verify_client_cert(&der, &[], UnixTime::now())
            .is_ok());
        // Another sandbox's WeChat CA did not issue it.
        let other = generate("1230000109", &key, Utc::now()).unwrap();
        assert!(other
            .client_verifier
            .verify_client_cert(&der, &[], UnixTime::now())
            .is_err());
    }
}
