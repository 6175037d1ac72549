module MetaGenRL.Pipeline.Program

[<EntryPoint>]
let main argv = 0
