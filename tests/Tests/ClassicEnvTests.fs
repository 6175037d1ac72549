module MetaGenRL.Tests.ClassicEnvTests

// PLACEHOLDER: replaced by the real tests.
