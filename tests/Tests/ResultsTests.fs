module MetaGenRL.Tests.ResultsTests

// PLACEHOLDER: replaced by the real tests.
