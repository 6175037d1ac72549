using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace MetaGenRL.Core.Checkpoints;

/// <summary>One checkpoint as loaded: its caller metadata and named binary parts (hashes already verified).</summary>
/// <param name="Index">the checkpoint number</param>
/// <param name="Path">its folder</param>
/// <param name="Created">when it was written (UTC)</param>
/// <param name="Meta">the metadata given to <see cref="CheckpointStore.Write"/> (env steps, wall time, …)</param>
/// <param name="Parts">part name → bytes</param>
public sealed record Checkpoint(int Index, string Path, DateTimeOffset Created, JsonObject Meta, IReadOnlyDictionary<string, byte[]> Parts);

/// <summary>
/// The <c>checkpoints/</c> folder of a run: one folder per checkpoint, <c>ckpt-000003/</c>, holding
/// <c>manifest.json</c> (format, index, created, the caller's metadata, and every part's size and SHA-256) and the
/// named binary parts (<c>agent-0.bin</c>, <c>objective.bin</c>, …).
/// Writes are atomic: everything goes to <c>ckpt-000003.tmp-&lt;guid&gt;/</c>, files and folder are fsynced, then
/// the folder is renamed to its final name. Readers trust only final-named folders whose manifest parses and whose
/// parts match it, so a crash at any point (even kill -9) never yields a half checkpoint: it leaves a tmp folder
/// that <see cref="Latest"/> ignores and <see cref="Prune"/> removes. One writer per run folder.
/// </summary>
public sealed partial class CheckpointStore
{
    /// <summary>The manifest's <c>format</c> value.</summary>
    public const string Format = "metagenrl-checkpoint";
    /// <summary>The manifest's <c>version</c> value.</summary>
    public const int Version = 1;
    /// <summary>The manifest's file name.</summary>
    public const string ManifestName = "manifest.json";

    [GeneratedRegex(@"^ckpt-(\d{6,})$")] private static partial Regex FinalName();
    [GeneratedRegex(@"^ckpt-\d{6,}\.(tmp|invalid)-[0-9a-f]{32}$")] private static partial Regex DebrisName();
    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")] private static partial Regex PartName();

    /// <param name="runDir">the run folder; checkpoints live in <c>runDir/checkpoints</c> (created on first write)</param>
    public CheckpointStore(string runDir)
    {
        ArgumentException.ThrowIfNullOrEmpty(runDir);
        Root = System.IO.Path.Combine(System.IO.Path.GetFullPath(runDir), "checkpoints");
    }

    /// <summary>The <c>checkpoints/</c> folder.</summary>
    public string Root { get; }

    /// <summary>The final folder of checkpoint <paramref name="index"/>.</summary>
    public string PathOf(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        return System.IO.Path.Combine(Root, "ckpt-" + index.ToString("D6", CultureInfo.InvariantCulture));
    }

    // ── WRITE ──

    /// <summary>Writes checkpoint <paramref name="index"/> atomically and returns its folder. An existing valid
    /// checkpoint of that index is an error; an invalid one (e.g. a corrupted folder) is moved aside first.</summary>
    /// <param name="index">checkpoint number (≥ 0)</param>
    /// <param name="parts">part name (a plain file name, not <c>manifest.json</c>) → bytes</param>
    /// <param name="meta">caller metadata stored in the manifest under <c>meta</c> (e.g. env_step per agent, wall time)</param>
    public string Write(int index, IReadOnlyDictionary<string, byte[]> parts, JsonObject meta)
    {
        ArgumentNullException.ThrowIfNull(parts);
        ArgumentNullException.ThrowIfNull(meta);
        foreach (var name in parts.Keys)
            if (!PartName().IsMatch(name) || name == ManifestName || name.Contains(".tmp-"))
                throw new ArgumentException($"checkpoint part name '{name}' must be a plain file name ([A-Za-z0-9._-], not {ManifestName})", nameof(parts));
        string final = PathOf(index);
        Directory.CreateDirectory(Root);
        if (Directory.Exists(final))
        {
            if (Validate(index) is null) throw new IOException($"checkpoint {final} already exists");
            Directory.Move(final, final + ".invalid-" + Guid.NewGuid().ToString("N"));
        }

        string tmp = final + ".tmp-" + Guid.NewGuid().ToString("N");
        Directory.CreateDirectory(tmp);
        try
        {
            var files = new JsonArray();
            foreach (var (name, bytes) in parts.OrderBy(p => p.Key, StringComparer.Ordinal))
            {
                WriteDurably(System.IO.Path.Combine(tmp, name), bytes);
                files.Add(new JsonObject { ["name"] = name, ["size"] = bytes.LongLength, ["sha256"] = Sha256(bytes) });
            }
            var manifest = new JsonObject
            {
                ["format"] = Format,
                ["version"] = Version,
                ["index"] = index,
                ["created"] = DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture),
                ["meta"] = meta.DeepClone(),
                ["files"] = files,
            };
            WriteDurably(System.IO.Path.Combine(tmp, ManifestName),
                         JsonSerializer.SerializeToUtf8Bytes(manifest, new JsonSerializerOptions { WriteIndented = true }));
            FsyncDirectory(tmp);
            Directory.Move(tmp, final);
            FsyncDirectory(Root);
            return final;
        }
        catch
        {
            try { if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    static void WriteDurably(string path, byte[] bytes)
    {
        using var fs = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.None);
        fs.Write(bytes);
        fs.Flush(flushToDisk: true);
    }

    // A rename is durable only once the parent directory's entry is on disk; .NET has no directory fsync.
    [DllImport("libc", SetLastError = true)] static extern int open(string path, int flags);
    [DllImport("libc", SetLastError = true)] static extern int fsync(int fd);
    [DllImport("libc", SetLastError = true)] static extern int close(int fd);

    static void FsyncDirectory(string dir)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return;   // NTFS renames are journalled
        int fd = open(dir, 0 /* O_RDONLY */);
        if (fd < 0) return;   // best effort: the data files themselves are already flushed
        try { fsync(fd); } finally { close(fd); }
    }

    static string Sha256(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    // ── READ ──

    /// <summary>Indices of the final-named checkpoint folders, ascending (whether or not they validate; tmp and
    /// moved-aside folders are never listed).</summary>
    public IReadOnlyList<int> List()
    {
        if (!Directory.Exists(Root)) return [];
        var result = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories(Root))
        {
            var m = FinalName().Match(System.IO.Path.GetFileName(dir));
            if (m.Success && int.TryParse(m.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int i)) result.Add(i);
        }
        result.Sort();
        return result;
    }

    /// <summary>The highest index whose manifest is valid and whose parts all match their sizes and hashes; null if none.</summary>
    public int? Latest() => NewestValid().Index;

    /// <summary>The newest checkpoint that verifies among those <paramref name="allowed"/> accepts (all when null),
    /// with why each newer one was skipped (index, reason naming the file); null index when none verifies.</summary>
    public (int? Index, IReadOnlyList<(int Index, string Reason)> Skipped) NewestValid(Func<int, bool>? allowed = null)
    {
        var skipped = new List<(int, string)>();
        var all = List();
        for (int k = all.Count - 1; k >= 0; k--)
        {
            if (allowed is not null && !allowed(all[k])) continue;
            if (Validate(all[k]) is { } why) skipped.Add((all[k], why));
            else return (all[k], skipped);
        }
        return (null, skipped);
    }

    /// <summary>The SHA-256 of checkpoint <paramref name="index"/>'s manifest, which lists every part's hash: one
    /// value that identifies the checkpoint's whole content (recorded by the runs that load it).</summary>
    public string ManifestHash(int index) =>
        Sha256(File.ReadAllBytes(System.IO.Path.Combine(PathOf(index), ManifestName)));

    /// <summary>Null when checkpoint <paramref name="index"/> is complete and intact, else why not (naming the file).</summary>
    public string? Validate(int index)
    {
        try { Read(index, keepBytes: false); return null; }
        catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException) { return e.Message; }
    }

    /// <summary>Loads checkpoint <paramref name="index"/>, verifying every part against the manifest.</summary>
    /// <exception cref="DirectoryNotFoundException">no such checkpoint</exception>
    /// <exception cref="InvalidDataException">unreadable manifest, missing, truncated or altered part (the message names it)</exception>
    public Checkpoint Load(int index) => Read(index, keepBytes: true);

    Checkpoint Read(int index, bool keepBytes)
    {
        string dir = PathOf(index);
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"checkpoint {dir} does not exist");
        string manifestPath = System.IO.Path.Combine(dir, ManifestName);
        if (!File.Exists(manifestPath)) throw new InvalidDataException($"checkpoint {dir}: {ManifestName} is missing (incomplete checkpoint)");
        JsonObject manifest;
        try { manifest = JsonNode.Parse(File.ReadAllBytes(manifestPath)) as JsonObject ?? throw new InvalidDataException("not a JSON object"); }
        catch (JsonException e) { throw new InvalidDataException($"checkpoint {manifestPath} is not valid JSON: {e.Message}"); }

        string Bad(string why) => $"checkpoint {manifestPath}: {why}";
        try
        {
            if ((string?)manifest["format"] != Format) throw new InvalidDataException(Bad($"format is not '{Format}'"));
            int version = (int?)manifest["version"] ?? -1;
            if (version != Version) throw new InvalidDataException(Bad($"version {version} is not supported (this build reads {Version})"));
            if ((int?)manifest["index"] != index) throw new InvalidDataException(Bad($"index {manifest["index"]} does not match the folder name"));
            var created = DateTimeOffset.Parse((string?)manifest["created"] ?? throw new InvalidDataException(Bad("no 'created'")),
                                               CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind);
            var meta = manifest["meta"] as JsonObject ?? throw new InvalidDataException(Bad("no 'meta' object"));
            var files = manifest["files"] as JsonArray ?? throw new InvalidDataException(Bad("no 'files' list"));
            var parts = new Dictionary<string, byte[]>(StringComparer.Ordinal);
            foreach (var f in files)
            {
                string name = (string?)f?["name"] ?? throw new InvalidDataException(Bad("a file entry has no name"));
                long size = (long?)f!["size"] ?? throw new InvalidDataException(Bad($"{name} has no size"));
                string hash = (string?)f["sha256"] ?? throw new InvalidDataException(Bad($"{name} has no sha256"));
                if (!PartName().IsMatch(name) || name == ManifestName || parts.ContainsKey(name))
                    throw new InvalidDataException(Bad($"invalid or repeated part name '{name}'"));
                string path = System.IO.Path.Combine(dir, name);
                if (!File.Exists(path)) throw new InvalidDataException($"checkpoint {dir}: part {name} is missing");
                long actual = new FileInfo(path).Length;
                if (actual != size) throw new InvalidDataException($"checkpoint {dir}: part {name} has {actual} bytes, the manifest says {size} (truncated or altered)");
                var bytes = File.ReadAllBytes(path);
                if (Sha256(bytes) != hash) throw new InvalidDataException($"checkpoint {dir}: part {name} does not match its SHA-256 (corrupted)");
                parts[name] = keepBytes ? bytes : [];
            }
            return new Checkpoint(index, dir, created, (JsonObject)meta.DeepClone(), parts);
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException or OverflowException)
        {
            throw new InvalidDataException(Bad($"malformed manifest ({e.Message})"), e);
        }
    }

    // ── PRUNE ──

    /// <summary>Keeps the newest <paramref name="keepLast"/> valid checkpoints; deletes every checkpoint folder below
    /// the oldest kept one (valid or not) and all tmp / moved-aside leftovers. Invalid folders above the kept ones are
    /// left for inspection. Returns the deleted folders. Call it from the writer, between writes: a tmp folder of a
    /// write in progress would be deleted too.</summary>
    public IReadOnlyList<string> Prune(int keepLast)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(keepLast, 1);
        var deleted = new List<string>();
        if (!Directory.Exists(Root)) return deleted;
        var all = List();
        var valid = all.Where(i => Validate(i) is null).ToList();
        if (valid.Count > 0)
        {
            int oldestKept = valid[Math.Max(0, valid.Count - keepLast)];
            foreach (var i in all.Where(i => i < oldestKept))
            {
                Directory.Delete(PathOf(i), recursive: true);
                deleted.Add(PathOf(i));
            }
        }
        foreach (var dir in Directory.EnumerateDirectories(Root).ToList())
            if (DebrisName().IsMatch(System.IO.Path.GetFileName(dir)))
            {
                Directory.Delete(dir, recursive: true);
                deleted.Add(dir);
            }
        return deleted;
    }
}
