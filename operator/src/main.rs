use kube::CustomResourceExt;
fn main() {
    print!("{}", serde_yaml::to_string(&gantry_operator::crd::GoServer::crd()).unwrap());
}
