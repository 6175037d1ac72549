module MetaGenRL.Tests.ReplayTests

// PLACEHOLDER: replaced by the real tests.
