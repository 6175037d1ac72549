module MetaGenRL.Pipeline.Cli
