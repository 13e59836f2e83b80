fn main() {
    println!("image-reflector");
}
