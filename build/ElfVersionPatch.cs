// Marks one symbol-version requirement of an ELF shared library as weak (VER_FLG_WEAK).
//
// TorchSharp's libLibTorchSharp.so asks for GLIBCXX_3.4.32, which Debian 12's libstdc++ lacks. The only
// symbol under that version is a GCC-13 marker with no relocation, so a weak requirement loads and runs.
// This file is compiled twice: into MetaGenRL.Core (runtime fallback used by Native.EnsureLoaded) and as an
// MSBuild inline task (Directory.Build.targets) that patches the NuGet cache and every output folder.
using System;
using System.IO;
using System.Text;

namespace MetaGenRL.Build
{
    public static class ElfVersionPatch
    {
        const uint ShtGnuVerneed = 0x6ffffffe;
        const ushort VerFlgWeak = 2;

        /// <summary>Returns true when <paramref name="bytes"/> needed <paramref name="version"/> non-weakly
        /// and was changed in place; false when nothing had to change.</summary>
        public static bool Weaken(byte[] bytes, string version)
        {
            if (bytes.Length < 64 || bytes[0] != 0x7f || bytes[1] != (byte)'E' || bytes[2] != (byte)'L' || bytes[3] != (byte)'F' || bytes[4] != 2)
                throw new InvalidDataException("not a 64-bit ELF file");
            long shoff = BitConverter.ToInt64(bytes, 0x28);
            int shentsize = BitConverter.ToUInt16(bytes, 0x3A);
            int shnum = BitConverter.ToUInt16(bytes, 0x3C);
            bool changed = false;
            for (int s = 0; s < shnum; s++)
            {
                long sh = shoff + (long)s * shentsize;
                if (BitConverter.ToUInt32(bytes, (int)sh + 4) != ShtGnuVerneed) continue;
                long off = BitConverter.ToInt64(bytes, (int)sh + 0x18);
                int link = (int)BitConverter.ToUInt32(bytes, (int)sh + 0x28);
                int count = (int)BitConverter.ToUInt32(bytes, (int)sh + 0x2C);
                long strtab = BitConverter.ToInt64(bytes, (int)(shoff + (long)link * shentsize) + 0x18);
                long need = off;
                for (int n = 0; n < count; n++)
                {
                    int auxCount = BitConverter.ToUInt16(bytes, (int)need + 2);
                    long aux = need + BitConverter.ToUInt32(bytes, (int)need + 8);
                    for (int a = 0; a < auxCount; a++)
                    {
                        long name = strtab + BitConverter.ToUInt32(bytes, (int)aux + 8);
                        if (ReadCString(bytes, name) == version)
                        {
                            ushort flags = BitConverter.ToUInt16(bytes, (int)aux + 4);
                            if ((flags & VerFlgWeak) == 0)
                            {
                                BitConverter.GetBytes((ushort)(flags | VerFlgWeak)).CopyTo(bytes, (int)aux + 4);
                                changed = true;
                            }
                        }
                        aux += BitConverter.ToUInt32(bytes, (int)aux + 12);
                    }
                    need += BitConverter.ToUInt32(bytes, (int)need + 12);
                }
            }
            return changed;
        }

        /// <summary>Patches <paramref name="source"/> into <paramref name="target"/> (which may be the same
        /// path) atomically: temp file then rename. Returns true when a change was written.</summary>
        public static bool WeakenFile(string source, string target, string version)
        {
            byte[] bytes = File.ReadAllBytes(source);
            bool changed = Weaken(bytes, version);
            if (!changed && source == target) return false;
            string tmp = target + ".tmp" + Guid.NewGuid().ToString("N");
            File.WriteAllBytes(tmp, bytes);
            if (File.Exists(target)) File.Delete(target);
            File.Move(tmp, target);
            return changed;
        }

        static string ReadCString(byte[] bytes, long at)
        {
            int end = (int)at;
            while (end < bytes.Length && bytes[end] != 0) end++;
            return Encoding.ASCII.GetString(bytes, (int)at, end - (int)at);
        }
    }

#if !METAGENRL_CORE
    /// <summary>MSBuild task wrapper: weakens <see cref="Version"/> in every existing file of <see cref="Files"/>.</summary>
    public class WeakenGlibcxxVersion : Microsoft.Build.Utilities.Task
    {
        public Microsoft.Build.Framework.ITaskItem[] Files { get; set; } = Array.Empty<Microsoft.Build.Framework.ITaskItem>();
        public string Version { get; set; } = "GLIBCXX_3.4.32";

        public override bool Execute()
        {
            foreach (var item in Files)
            {
                string path = item.ItemSpec;
                if (!File.Exists(path)) continue;
                // Hard-linked outputs share the inode with the NuGet cache: patching one patches both,
                // and writing via temp+rename breaks the link only for a file that actually changed.
                if (ElfVersionPatch.WeakenFile(path, path, Version))
                    Log.LogMessage(Microsoft.Build.Framework.MessageImportance.High, $"weakened {Version} in {path}");
            }
            return true;
        }
    }
#endif
}
