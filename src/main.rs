fn main() -> std::process::ExitCode {
    loanfolio::cli::run()
}
