//! `cargo xtask image server|operator`: the Dockerfile's targets built with
//! buildah (`--isolation chroot`, no daemon), tagged
//! `localhost/gantry-<target>:<version>`.
//!
//! The Dockerfile names two base images, `RUST_IMAGE` and `RUNTIME_IMAGE`.
//! When buildah's store already has an image of that name (pulled from its
//! registry, say), it is used as it is. When it has none, and no registry
//! can be reached, this task builds a local stand-in under the exact name
//! from what the machine has:
//!
//! - the Rust image: a minimal Debian root filesystem (debootstrap, from
//!   Debian's packages) with gcc and the C library headers, the Rust
//!   toolchain that runs this task (which must be the version in the tag),
//!   and the certificate authorities this machine trusts, so that cargo
//!   inside the build reaches crates.io the way the machine does;
//! - the distroless `static` runtime image (the binaries are linked
//!   statically): the files of Debian's base-files, tzdata and netbase
//!   packages from the same root filesystem, Debian's CA bundle,
//!   `/etc/passwd` and `/etc/group` with root, nobody and nonroot (65532),
//!   `/etc/nsswitch.conf`, user 65532 and workdir `/home/nonroot`. No C
//!   library, no shell and no package manager.
//!
//! A stand-in carries the label `dev.gantry.stand-in` with a fingerprint of
//! what it was built from, and is rebuilt when that changes. An image
//! without the label is never replaced.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::deps::{self, Package};
use crate::{proc, workspace};

/// The label that marks (and fingerprints) a locally built stand-in.
const STAND_IN_LABEL: &str = "dev.gantry.stand-in";
/// Bumped when the way stand-ins are made changes.
const STAND_IN_FORMAT: &str = "1";

/// Packages this task runs.
pub const PACKAGES: &[Package] = &[
    Package {
        command: "buildah",
        package: "buildah",
    },
    Package {
        command: "debootstrap",
        package: "debootstrap",
    },
];

/// The Debian packages in the build stage's root filesystem besides the
/// minimal base.
const BUILD_PACKAGES: &str = "ca-certificates,gcc,libc6-dev,netbase";

/// The Debian packages whose files make up the runtime stand-in (the
/// contents of distroless `static`).
const RUNTIME_PACKAGES: &[&str] = &["base-files", "netbase", "tzdata"];

/// Host names from /etc/hosts first, then DNS, as distroless writes it;
/// static glibc has both lookups built in.
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n\
                        networks: files\nprotocols: files\nservices: files\n";

/// Parts of those packages an image does not need (documentation, and the
/// shell snippets of base-files: there is no shell to run them).
const RUNTIME_EXCLUDED: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/common-licenses",
    "etc/update-motd.d",
    "etc/profile.d",
    "etc/skel",
    "etc/profile",
    "etc/dpkg",
];

const NONROOT: u32 = 65532;

#[derive(clap::Args)]
pub struct Args {
    /// The images to build.
    #[arg(value_enum, required = true, num_args = 1..)]
    targets: Vec<Target>,
    /// buildah's storage driver. vfs works everywhere, including inside
    /// containers without a copy-on-write filesystem; overlay is faster
    /// where the kernel allows it.
    #[arg(long, env = "GANTRY_BUILDAH_STORAGE_DRIVER", default_value = "vfs")]
    storage_driver: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Server,
    Operator,
}

impl Target {
    /// The Dockerfile target and the binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Self::Server => "gantry-server",
            Self::Operator => "gantry-operator",
        }
    }

    /// The local name of the image built with cargo profile `profile`:
    /// tagged with the version for [`SHIPPED`], and with the version and
    /// the profile for any other, so that an image built for the tests is
    /// never taken for one to push.
    pub fn image(self, profile: &str) -> String {
        let version = env!("CARGO_PKG_VERSION");
        if profile == SHIPPED {
            format!("localhost/{}:{version}", self.binary())
        } else {
            format!("localhost/{}:{version}-{profile}", self.binary())
        }
    }
}

/// The cargo profile of the images that ship (fat LTO, one codegen unit).
pub const SHIPPED: &str = "dist";

/// The cargo profile `cargo xtask test` builds its images with by default:
/// no LTO, many codegen units, a fraction of the build time.
pub const UNDER_TEST: &str = "image-test";

pub fn run(args: &Args) -> Result<ExitCode> {
    let buildah = Buildah::new(&args.storage_driver);
    for image in build(&buildah, &args.targets, SHIPPED, false)? {
        println!("{image}");
    }
    eprintln!(
        "\nrun one:     buildah --storage-driver {driver} from {server}\n\
         push one:    buildah --storage-driver {driver} push {server} docker://<registry>/gantry-server:{version}\n\
         the build cache: cargo's registry and target directory in buildah's cache mounts \
         (/var/tmp/buildah-cache*)",
        driver = args.storage_driver,
        server = Target::Server.image(SHIPPED),
        version = env!("CARGO_PKG_VERSION"),
    );
    Ok(ExitCode::SUCCESS)
}

/// buildah with a fixed storage driver.
pub struct Buildah {
    driver: String,
}

impl Buildah {
    pub fn new(driver: &str) -> Self {
        Self {
            driver: driver.to_owned(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.arg("--storage-driver").arg(&self.driver);
        cmd
    }

    fn output(&self, step: &str, args: &[&str]) -> Result<String> {
        Ok(proc::output(step, self.command().args(args))?
            .trim()
            .to_owned())
    }

    /// The ID of the image `name`, if there is one.
    fn image_id(&self, name: &str) -> Option<String> {
        self.inspect(name, "{{.FromImageID}}")
            .filter(|id| !id.is_empty())
    }

    /// The value of `label` on the image `name`: `None` when there is no
    /// such image, `Some("")` when the image has no such label.
    fn label(&self, name: &str, label: &str) -> Option<String> {
        let format = format!("{{{{index .OCIv1.Config.Labels \"{label}\"}}}}");
        self.inspect(name, &format)
            .map(|value| value.replace("<no value>", ""))
    }

    /// `buildah inspect` of the image `name` with a Go template: `None`
    /// when there is no such image.
    fn inspect(&self, name: &str, format: &str) -> Option<String> {
        let out = self
            .command()
            .args(["inspect", "--type", "image", "--format", format, name])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

/// Builds `targets` with the binaries of cargo profile `profile` (and,
/// first, any stand-in base image that is missing), returning the images'
/// names. `quiet` sends buildah's output to log files under
/// target/gantry/images instead of the terminal.
pub fn build(
    buildah: &Buildah,
    targets: &[Target],
    profile: &str,
    quiet: bool,
) -> Result<Vec<String>> {
    deps::ensure(PACKAGES)?;
    let root = workspace::root();
    let dockerfile = fs::read_to_string(root.join("Dockerfile")).context("reading Dockerfile")?;
    let bases = BaseImages::from_dockerfile(&dockerfile)?;
    let work = root.join("target").join("gantry").join("images");
    fs::create_dir_all(&work)?;
    ensure_stand_ins(buildah, &bases, &work)?;

    let mut built = Vec::new();
    for &target in targets {
        let image = target.image(profile);
        eprintln!(
            "building {image} (Dockerfile target {}, profile {profile})",
            target.binary()
        );
        let started = Instant::now();
        let previous = buildah.image_id(&image);
        let mut cmd = buildah.command();
        cmd.current_dir(&root).args([
            "build",
            "--isolation",
            "chroot",
            // No layer cache: the Dockerfile's cache mounts carry cargo's
            // work from build to build, and every cached layer would be a
            // full copy of the build tree in a vfs store. Intermediate
            // containers go even when the build fails.
            "--layers=false",
            "--force-rm",
            "--pull=never",
            "--build-arg",
            &format!("PROFILE={profile}"),
            "--target",
            target.binary(),
            "--tag",
            &image,
            "--file",
            "Dockerfile",
            ".",
        ]);
        let step = format!("buildah build {image}");
        if quiet {
            let log = work.join(format!("{}.log", target.binary()));
            eprintln!("  (log: {})", log.display());
            proc::run_logged(&step, &mut cmd, &log)?;
        } else {
            proc::run(&step, &mut cmd)?;
        }
        eprintln!("built {image} in {:.0?}", started.elapsed());
        // The image this build replaced lost its name: remove it rather than
        // keep a nameless copy per build. One a container still uses stays.
        if let Some(previous) = previous.filter(|id| buildah.image_id(&image).as_ref() != Some(id))
        {
            let _ = buildah.command().args(["rmi", &previous]).output();
        }
        built.push(image);
    }
    Ok(built)
}

/// The two base images the Dockerfile names in its `ARG` defaults.
#[derive(Debug, PartialEq, Eq)]
struct BaseImages {
    /// `RUST_IMAGE`, such as `docker.io/library/rust:1.95-bookworm`.
    rust: String,
    /// The Rust version in its tag, such as `1.95`.
    rust_version: String,
    /// The Debian suite in its tag, such as `bookworm`.
    suite: String,
    /// `RUNTIME_IMAGE`, such as `gcr.io/distroless/static-debian12:nonroot`.
    runtime: String,
}

impl BaseImages {
    fn from_dockerfile(dockerfile: &str) -> Result<Self> {
        let arg = |name: &str| -> Result<String> {
            let prefix = format!("ARG {name}=");
            dockerfile
                .lines()
                .find_map(|line| line.trim().strip_prefix(&prefix))
                .map(|value| value.trim().to_owned())
                .with_context(|| format!("the Dockerfile has no `ARG {name}=<image>` line"))
        };
        let rust = arg("RUST_IMAGE")?;
        let runtime = arg("RUNTIME_IMAGE")?;
        let tag = rust
            .rsplit_once(':')
            .map(|(_, tag)| tag)
            .with_context(|| format!("RUST_IMAGE {rust} has no tag"))?;
        let Some((rust_version, suite)) = tag.split_once('-') else {
            bail!("RUST_IMAGE {rust}: expected a tag such as 1.95-bookworm");
        };
        Ok(Self {
            rust_version: rust_version.to_owned(),
            suite: suite.to_owned(),
            rust,
            runtime,
        })
    }
}

/// What buildah's store holds under a base image's name.
#[derive(Debug, PartialEq, Eq)]
enum BaseImage {
    /// Nothing: a stand-in is built.
    Missing,
    /// An image without the stand-in label (pulled from its registry, say):
    /// used as it is, never replaced.
    Foreign,
    /// A stand-in built from the same inputs.
    UpToDate,
    /// A stand-in built from other inputs: rebuilt.
    Stale,
}

impl BaseImage {
    /// From the image's stand-in label (`None`: no image; `Some("")`: no
    /// label) and the fingerprint wanted now.
    fn judge(label: Option<&str>, want: &str) -> Self {
        match label {
            None => Self::Missing,
            Some("") => Self::Foreign,
            Some(have) if have == want => Self::UpToDate,
            Some(_) => Self::Stale,
        }
    }
}

/// Builds the stand-ins that are missing or out of date.
fn ensure_stand_ins(buildah: &Buildah, bases: &BaseImages, work: &Path) -> Result<()> {
    let toolchain = Toolchain::current()?;
    let host_cas = host_ca_bundle()?;
    let fingerprint = |kind: &str| {
        let mut hash = Sha256::new();
        for part in [STAND_IN_FORMAT, kind, &bases.suite, &debian_mirror()] {
            hash.update(part);
            hash.update([0]);
        }
        if kind == "rust" {
            hash.update(&toolchain.version);
            hash.update(&host_cas);
        }
        format!("{:x}", hash.finalize())
    };
    let wanted = [
        (&bases.rust, fingerprint("rust")),
        (&bases.runtime, fingerprint("runtime")),
    ];
    let mut stale = Vec::new();
    for (name, want) in &wanted {
        match BaseImage::judge(buildah.label(name, STAND_IN_LABEL).as_deref(), want) {
            BaseImage::Foreign => eprintln!("using the image {name} as it is"),
            BaseImage::UpToDate => {}
            BaseImage::Missing | BaseImage::Stale => stale.push(name.as_str()),
        }
    }
    if stale.is_empty() {
        return Ok(());
    }

    can_build_stand_ins(bases, &toolchain, &stale)?;
    eprintln!(
        "{} not in buildah's store: building local stand-ins from Debian {} packages \
         and this machine's Rust {}",
        stale.join(" and "),
        bases.suite,
        toolchain.version
    );
    let started = Instant::now();
    let rootfs = work.join("rootfs");
    remove_dir(&rootfs)?;
    proc::run_logged(
        "debootstrap",
        Command::new("debootstrap").args([
            "--variant=minbase",
            &format!("--include={BUILD_PACKAGES}"),
            &bases.suite,
            &rootfs.display().to_string(),
            &debian_mirror(),
        ]),
        &work.join("debootstrap.log"),
    )?;

    // The runtime files first: they take Debian's own CA bundle, before the
    // build stage's is replaced with this machine's.
    if stale.contains(&bases.runtime.as_str()) {
        let tar = runtime_rootfs(&rootfs, work)?;
        import(
            buildah,
            &tar,
            &bases.runtime,
            &[
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env",
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                "--user",
                &format!("{NONROOT}:{NONROOT}"),
                "--workingdir",
                "/home/nonroot",
                "--label",
                &format!("{STAND_IN_LABEL}={}", fingerprint("runtime")),
            ],
        )?;
    }
    if stale.contains(&bases.rust.as_str()) {
        let tar = rust_rootfs(&rootfs, work, &toolchain, &host_cas)?;
        import(
            buildah,
            &tar,
            &bases.rust,
            &[
                "--env",
                "CARGO_HOME=/usr/local/cargo",
                "--env",
                "PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:\
                 /usr/sbin:/usr/bin:/sbin:/bin",
                "--env",
                &format!("RUST_VERSION={}", toolchain.version),
                "--cmd",
                "bash",
                "--label",
                &format!("{STAND_IN_LABEL}={}", fingerprint("rust")),
            ],
        )?;
    }
    remove_dir(&rootfs)?;
    eprintln!("stand-ins built in {:.0?}", started.elapsed());
    Ok(())
}

/// Fails, saying what to do, when this task cannot build the stand-ins.
fn can_build_stand_ins(bases: &BaseImages, toolchain: &Toolchain, stale: &[&str]) -> Result<()> {
    if !toolchain
        .version
        .starts_with(&format!("{}.", bases.rust_version))
    {
        bail!(
            "the stand-in for {} needs Rust {}.x, but this task runs with Rust {}; \
             run it with that toolchain (`rustup toolchain install {}`) or pull {} first",
            bases.rust,
            bases.rust_version,
            toolchain.version,
            bases.rust_version,
            bases.rust
        );
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "{} not found in buildah's store; building stand-ins for them runs debootstrap, \
             which needs root. Pull them (`buildah pull ...`) or run this task as root",
            stale.join(" and ")
        );
    }
    Ok(())
}

/// The Rust toolchain running this task.
struct Toolchain {
    /// Such as `1.95.0`.
    version: String,
    sysroot: PathBuf,
}

impl Toolchain {
    fn current() -> Result<Self> {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
        let version = proc::output("rustc --version", Command::new(&rustc).arg("--version"))?;
        let version = version
            .split_whitespace()
            .nth(1)
            .context("unexpected `rustc --version` output")?
            .to_owned();
        let sysroot = proc::output(
            "rustc --print sysroot",
            Command::new(&rustc).args(["--print", "sysroot"]),
        )?;
        Ok(Self {
            version,
            sysroot: PathBuf::from(sysroot.trim()),
        })
    }
}

/// The CA bundle this machine trusts (`SSL_CERT_FILE`, else Debian's path).
fn host_ca_bundle() -> Result<Vec<u8>> {
    let path = workspace::non_empty_env("SSL_CERT_FILE")
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".to_owned());
    fs::read(&path).with_context(|| format!("reading this machine's CA bundle {path}"))
}

fn debian_mirror() -> String {
    workspace::non_empty_env("GANTRY_DEBIAN_MIRROR")
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_owned())
}

/// The build stage's root filesystem as a tar file: the debootstrap tree
/// with the toolchain in /usr/local/rust and this machine's CA bundle.
fn rust_rootfs(rootfs: &Path, work: &Path, toolchain: &Toolchain, cas: &[u8]) -> Result<PathBuf> {
    let rust = rootfs.join("usr/local/rust");
    fs::create_dir_all(&rust)?;
    fs::create_dir_all(rootfs.join("usr/local/cargo/bin"))?;
    // Everything but share/ (documentation).
    for part in ["bin", "lib", "libexec", "etc"] {
        let from = toolchain.sysroot.join(part);
        if from.exists() {
            proc::run(
                "copying the Rust toolchain",
                Command::new("cp").arg("-a").arg(&from).arg(&rust),
            )?;
        }
    }
    fs::write(rootfs.join("etc/ssl/certs/ca-certificates.crt"), cas)?;
    for cache in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let dir = rootfs.join(cache);
        remove_dir(&dir)?;
        fs::create_dir_all(&dir)?;
    }
    pack(rootfs, &work.join("rust-rootfs.tar"))
}

/// Packs the tree `dir` into the tar file `tar`, owners and modes kept.
fn pack(dir: &Path, tar: &Path) -> Result<PathBuf> {
    proc::run(
        &format!("packing {}", dir.display()),
        Command::new("tar")
            .arg("-C")
            .arg(dir)
            .arg("-cf")
            .arg(tar)
            .arg("."),
    )?;
    Ok(tar.to_owned())
}

/// The runtime image's root filesystem as a tar file: the files of
/// [`RUNTIME_PACKAGES`] as installed in `rootfs`, plus the nonroot user.
fn runtime_rootfs(rootfs: &Path, work: &Path) -> Result<PathBuf> {
    let mut listed = String::new();
    for package in RUNTIME_PACKAGES {
        let list = rootfs
            .join("var/lib/dpkg/info")
            .join(format!("{package}.list"));
        listed += &fs::read_to_string(&list)
            .with_context(|| format!("{package} is not installed in the debootstrap tree"))?;
    }
    let mut paths = runtime_paths(rootfs, &listed);
    paths.push("etc/ssl/certs/ca-certificates.crt".to_owned());
    let list = work.join("runtime-files.txt");
    fs::write(&list, paths.join("\n") + "\n")?;

    let staging = work.join("runtime-rootfs");
    remove_dir(&staging)?;
    fs::create_dir_all(&staging)?;
    let files = work.join("runtime-files.tar");
    proc::run(
        "collecting the runtime files",
        Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .args(["--no-recursion", "-cf"])
            .arg(&files)
            .arg("-T")
            .arg(&list),
    )?;
    proc::run(
        "unpacking the runtime files",
        Command::new("tar")
            .arg("-C")
            .arg(&staging)
            .arg("-xf")
            .arg(&files),
    )?;
    fs::write(
        staging.join("etc/passwd"),
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
             nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
        ),
    )?;
    fs::write(staging.join("etc/nsswitch.conf"), NSSWITCH)?;
    fs::write(
        staging.join("etc/group"),
        format!("root:x:0:\nnobody:x:65534:\nnonroot:x:{NONROOT}:\n"),
    )?;
    let home = staging.join("home/nonroot");
    fs::create_dir_all(&home)?;
    std::os::unix::fs::chown(&home, Some(NONROOT), Some(NONROOT)).context("chown /home/nonroot")?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700))?;
        fs::create_dir_all(staging.join("tmp"))?;
        fs::set_permissions(staging.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    }
    let tar = pack(&staging, &work.join("runtime-rootfs.tar"))?;
    remove_dir(&staging)?;
    Ok(tar)
}

/// The paths (relative to `rootfs`) to take for the dpkg file lists in
/// `listed`: each path's directory resolved through the tree's symlinks
/// (Debian's merged /usr lists `/lib/...` for files in `/usr/lib/...`),
/// without the excluded parts, plus the merged-/usr symlinks themselves.
fn runtime_paths(rootfs: &Path, listed: &str) -> Vec<String> {
    let canonical_root = rootfs.canonicalize().unwrap_or_else(|_| rootfs.to_owned());
    let mut paths: Vec<String> = listed
        .lines()
        .filter_map(|line| {
            let relative = line.trim().trim_start_matches('/');
            if relative.is_empty() || relative == "." {
                return None;
            }
            let path = Path::new(relative);
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => canonical_root
                    .join(p)
                    .canonicalize()
                    .ok()?
                    .strip_prefix(&canonical_root)
                    .ok()?
                    .to_owned(),
                _ => PathBuf::new(),
            };
            let resolved = parent.join(path.file_name()?);
            let text = resolved.to_string_lossy().into_owned();
            let excluded = RUNTIME_EXCLUDED
                .iter()
                .any(|ex| text == *ex || text.starts_with(&format!("{ex}/")));
            (!excluded).then_some(text)
        })
        .collect();
    for link in ["bin", "sbin", "lib", "lib64"] {
        if rootfs.join(link).is_symlink() {
            paths.push(link.to_owned());
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

/// Makes the image `name` from a root filesystem tar file.
fn import(buildah: &Buildah, tar: &Path, name: &str, config: &[&str]) -> Result<()> {
    let container = buildah.output("buildah from scratch", &["from", "scratch"])?;
    let result = (|| {
        buildah.output(
            "buildah add",
            &["add", &container, &tar.display().to_string(), "/"],
        )?;
        let mut args = vec!["config"];
        args.extend_from_slice(config);
        args.push(&container);
        buildah.output("buildah config", &args)?;
        buildah.output("buildah commit", &["commit", "--quiet", &container, name])
    })();
    let _ = buildah.output("buildah rm", &["rm", &container]);
    let id = result?;
    eprintln!(
        "stand-in {name}: {}",
        id.chars().take(12).collect::<String>()
    );
    let _ = fs::remove_file(tar);
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_images_come_from_the_dockerfile() {
        let dockerfile = fs::read_to_string(workspace::root().join("Dockerfile")).unwrap();
        let bases = BaseImages::from_dockerfile(&dockerfile).unwrap();
        assert_eq!(
            bases,
            BaseImages {
                rust: "docker.io/library/rust:1.95-bookworm".to_owned(),
                rust_version: "1.95".to_owned(),
                suite: "bookworm".to_owned(),
                runtime: "gcr.io/distroless/static-debian12:nonroot".to_owned(),
            }
        );
        let err = BaseImages::from_dockerfile("FROM scratch\n").unwrap_err();
        assert!(err.to_string().contains("ARG RUST_IMAGE="), "{err}");
    }

    #[test]
    fn only_stand_ins_are_ever_rebuilt() {
        assert_eq!(BaseImage::judge(None, "abc"), BaseImage::Missing);
        assert_eq!(BaseImage::judge(Some(""), "abc"), BaseImage::Foreign);
        assert_eq!(BaseImage::judge(Some("abc"), "abc"), BaseImage::UpToDate);
        assert_eq!(BaseImage::judge(Some("old"), "abc"), BaseImage::Stale);
    }

    #[test]
    fn runtime_paths_follow_merged_usr_and_skip_documentation() {
        let dir = std::env::temp_dir().join(format!("gantry-image-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("usr/lib/x86_64-linux-gnu")).unwrap();
        fs::create_dir_all(dir.join("usr/share/doc/libc6")).unwrap();
        fs::create_dir_all(dir.join("etc")).unwrap();
        std::os::unix::fs::symlink("usr/lib", dir.join("lib")).unwrap();
        let listed = "/.\n/etc\n/lib/x86_64-linux-gnu/libc.so.6\n\
                      /usr/share/doc/libc6/copyright\n/usr/share/doc\n/etc/missing-dir/file\n";
        let paths = runtime_paths(&dir, listed);
        assert_eq!(
            paths,
            ["etc", "lib", "usr/lib/x86_64-linux-gnu/libc.so.6"],
            "a listed file under a missing directory is dropped, /lib/... becomes usr/lib/..."
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
