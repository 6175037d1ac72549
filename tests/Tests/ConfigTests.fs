module MetaGenRL.Tests.ConfigTests

// PLACEHOLDER: replaced by the real tests.
