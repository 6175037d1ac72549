module MetaGenRL.Pipeline.Provenance
