module MetaGenRL.Tests.MuJoCoEnvTests

// PLACEHOLDER: replaced by the real tests.
