//! The local cluster's certificates: one CA, a serving certificate per
//! component that listens, a client certificate per identity that talks to
//! the apiserver, and the service-account signing key. All ECDSA P-256,
//! made fresh by every `cluster up` and never leaving the state directory.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The first address of the service range: the `kubernetes` Service's
/// cluster IP, which in-cluster clients verify the apiserver against.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// Paths of one certificate and its key.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every file `cluster up` hands to the components.
pub struct Pki {
    pub ca: Pair,
    pub apiserver: Pair,
    pub controller_manager_serving: Pair,
    pub scheduler_serving: Pair,
    pub admin: Pair,
    pub controller_manager: Pair,
    pub scheduler: Pair,
    pub kwok: Pair,
    /// Signs service-account tokens (apiserver; controller-manager for
    /// legacy token Secrets).
    pub service_account_key: PathBuf,
    /// Verifies them (apiserver).
    pub service_account_pub: PathBuf,
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(dir: &Path) -> Result<(Self, Pair)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "gantry-local-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let pair = write_pair(dir, "ca", &cert.pem(), &key.serialize_pem())?;
        Ok((
            Self {
                issuer: Issuer::new(params, key),
            },
            pair,
        ))
    }

    fn issue(
        &self,
        dir: &Path,
        name: &str,
        common_name: &str,
        organization: Option<&str>,
        sans: &[SanType],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Pair> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(org) = organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org);
        }
        params.subject_alt_names = sans.to_vec();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer)?;
        write_pair(dir, name, &cert.pem(), &key.serialize_pem())
    }
}

fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> Result<Pair> {
    let pair = Pair {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    fs::write(&pair.cert, cert).with_context(|| format!("writing {}", pair.cert.display()))?;
    write_private(&pair.key, key)?;
    Ok(pair)
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

fn dns(name: &str) -> Result<SanType> {
    Ok(SanType::DnsName(name.try_into()?))
}

/// Generates everything into `dir`.
pub fn generate(dir: &Path) -> Result<Pki> {
    fs::create_dir_all(dir)?;
    let (ca, ca_pair) = Ca::new(dir)?;
    let loopback = [
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        dns("localhost")?,
    ];
    let mut apiserver_sans = loopback.to_vec();
    apiserver_sans.push(SanType::IpAddress(IpAddr::V4(KUBERNETES_SERVICE_IP)));
    for name in [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        apiserver_sans.push(dns(name)?);
    }
    let server = ExtendedKeyUsagePurpose::ServerAuth;
    let client = ExtendedKeyUsagePurpose::ClientAuth;

    let service_account_key = dir.join("service-account.key");
    let service_account_pub = dir.join("service-account.pub");
    let signing = KeyPair::generate()?;
    write_private(&service_account_key, &signing.serialize_pem())?;
    fs::write(&service_account_pub, signing.public_key_pem())?;

    Ok(Pki {
        apiserver: ca.issue(
            dir,
            "apiserver",
            "kube-apiserver",
            None,
            &apiserver_sans,
            server.clone(),
        )?,
        controller_manager_serving: ca.issue(
            dir,
            "controller-manager-serving",
            "kube-controller-manager",
            None,
            &loopback,
            server.clone(),
        )?,
        scheduler_serving: ca.issue(
            dir,
            "scheduler-serving",
            "kube-scheduler",
            None,
            &loopback,
            server,
        )?,
        // system:masters is the cluster-admin group built into RBAC.
        admin: ca.issue(
            dir,
            "admin",
            "gantry-admin",
            Some("system:masters"),
            &[],
            client.clone(),
        )?,
        controller_manager: ca.issue(
            dir,
            "controller-manager",
            "system:kube-controller-manager",
            None,
            &[],
            client.clone(),
        )?,
        scheduler: ca.issue(
            dir,
            "scheduler",
            "system:kube-scheduler",
            None,
            &[],
            client.clone(),
        )?,
        // kwok plays every kubelet: it writes node and pod status, leases
        // and deletes pods, so it gets the admin group like kubeadm's
        // node-bootstrapping tools do in a test cluster.
        kwok: ca.issue(dir, "kwok", "kwok", Some("system:masters"), &[], client)?,
        ca: ca_pair,
        service_account_key,
        service_account_pub,
    })
}

/// A kubeconfig for `user` against the apiserver at `server`. JSON is valid
/// YAML, and every Kubernetes client reads it.
pub fn kubeconfig(server: &str, ca: &Path, user: &Pair) -> String {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gantry", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": "gantry", "user": {
            "client-certificate": user.cert,
            "client-key": user.key,
        }}],
        "contexts": [{"name": "gantry", "context": {"cluster": "gantry", "user": "gantry"}}],
        "current-context": "gantry",
    });
    format!("{config:#}\n")
}
