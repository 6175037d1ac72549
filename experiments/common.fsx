// Shared by every script in experiments/: references the built assemblies (run ./build.sh first) and makes
// the native libraries (libtorch, MuJoCo, the Box2D shim) loadable inside dotnet fsi.
#r "../src/Pipeline.FSharp/bin/Release/net10.0/TorchSharp.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/MetaGenRL.Core.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/MetaGenRL.Actors.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/Akka.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/Parquet.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/Spectre.Console.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/Argu.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/MetaGenRL.Pipeline.dll"

MetaGenRL.Core.Native.EnsureLoaded()
