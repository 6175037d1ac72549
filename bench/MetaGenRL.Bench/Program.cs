using MetaGenRL.Core;
using TorchSharp;
Native.EnsureLoaded();
var t = torch.ones(3);
Console.WriteLine(t.sum().item<float>());
