//! The command line: `--help` explains every flag, `crd` prints the CRD.

use std::process::Command;

// A helper of the tests below: a failure should stop the test with its message.
#[allow(clippy::expect_used)]
fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry-operator"))
        .args(args)
        .output()
        .expect("running gantry-operator");
    assert!(
        out.status.success(),
        "gantry-operator {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn help_explains_the_flags() {
    let help = run(&["--help"]);
    for flag in [
        "--kubeconfig",
        "--context",
        "--namespace",
        "--log-level",
        "--log-format",
        "crd",
        "run",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
    assert!(
        help.contains("all\n") || help.contains("all namespaces"),
        "namespace scope not explained:\n{help}"
    );
}

#[test]
fn crd_subcommand_prints_the_crd() {
    let yaml = run(&["crd"]);
    assert!(yaml.contains("name: goservers.gantry.dev"));
    assert_eq!(yaml, gantry_operator::crd::crd_yaml().unwrap());
}
