module MetaGenRL.Tests.Box2DEnvTests

// PLACEHOLDER: replaced by the real tests.
