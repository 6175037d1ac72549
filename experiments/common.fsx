// Shared by every script in experiments/: references the built assemblies (run ./build.sh first) and makes
// the native libraries (libtorch, MuJoCo, the Box2D shim) loadable inside dotnet fsi.
#r "../src/Pipeline.FSharp/bin/Release/net10.0/TorchSharp.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/MetaGenRL.Core.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/MetaGenRL.Actors.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/Akka.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/Parquet.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/Spectre.Console.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/Argu.dll"
// Report.write: plots (ScottPlot on SkiaSharp) and the HTML page (Plotly.NET).
#r "../src/Pipeline.FSharp/bin/Release/net10.0/SkiaSharp.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/ScottPlot.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/DynamicObj.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/Giraffe.ViewEngine.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/Plotly.NET.dll"
#r "../src/Pipeline.FSharp/bin/Release/net10.0/MetaGenRL.Pipeline.dll"

MetaGenRL.Core.Native.EnsureLoaded()

// fsi has no deps.json, so SkiaSharp's native library under runtimes/ is not probed: resolve it by full path.
System.Runtime.InteropServices.NativeLibrary.SetDllImportResolver(typeof<SkiaSharp.SKTypeface>.Assembly, fun name _ _ ->
    if name = "libSkiaSharp" then
        System.Runtime.InteropServices.NativeLibrary.Load(
            System.IO.Path.Combine(__SOURCE_DIRECTORY__, "../src/Pipeline.FSharp/bin/Release/net10.0/runtimes/linux-x64/native/libSkiaSharp.so"))
    else nativeint 0)
