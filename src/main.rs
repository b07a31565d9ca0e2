fn main() -> std::process::ExitCode {
    modelsync::cli::main()
}
