module MetaGenRL.Tests.Td3Tests

// PLACEHOLDER: replaced by the real tests.
