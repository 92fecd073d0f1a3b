//! The `htm-stream` command line: thin wrappers over the library.

fn main() {
    println!("htm-stream: commands are being written");
}
