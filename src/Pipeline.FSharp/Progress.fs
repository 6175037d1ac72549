module MetaGenRL.Pipeline.Progress
