module MetaGenRL.Pipeline.Results
