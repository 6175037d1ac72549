module MetaGenRL.Tests.CliTests

// PLACEHOLDER: replaced by the real tests.
