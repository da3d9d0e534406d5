fn main() {
    println!("gantry-server: not implemented yet");
}
