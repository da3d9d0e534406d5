fn main() {
    println!("gantry-operator: not implemented yet");
}
