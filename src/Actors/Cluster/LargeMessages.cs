using Akka.Actor;

namespace MetaGenRL.Actors.Cluster;

/// <summary>Part <paramref name="Index"/> of <paramref name="Count"/> of the wire bytes of one message that is too large
/// for one frame (<see cref="LargeMessages"/>): <paramref name="TotalBytes"/> in all, of the message type named by
/// <paramref name="Manifest"/>.</summary>
public sealed record MessagePart(long Id, int Index, int Count, long TotalBytes, string Manifest, byte[] Bytes);

/// <summary>
/// Sends the population's state messages (<see cref="StatesSaved"/>, <see cref="RestoreGroup"/>,
/// <see cref="RestorePoints"/>: agent states, with the replay buffer about 170 MB per HalfCheetah agent) to another
/// node in parts of <see cref="PartBytes"/> when they are above the split size, since Akka.Remote drops a message over
/// its frame (<see cref="WireSerializer.FrameBytes"/>). Parts between two actors arrive in order; the receiver puts
/// them together with a <see cref="PartAssembler"/>. The split size is <c>metagenrl.wire.split-above</c> in the
/// ActorSystem's config (default 32 MiB); local targets always get the message itself.
/// </summary>
public static class LargeMessages
{
    /// <summary>The size of every part but the last: 16 MiB.</summary>
    public const int PartBytes = 16 << 20;

    /// <summary>The config path of the split size.</summary>
    public const string SplitAbovePath = "metagenrl.wire.split-above";

    static long _nextId;

    /// <summary>The split size of <paramref name="system"/> (<see cref="SplitAbovePath"/>, default 32 MiB).</summary>
    public static long SplitAbove(ActorSystem system) =>
        system.Settings.Config.GetByteSize(SplitAbovePath, null) ?? 32L << 20;

    /// <summary>Tells <paramref name="target"/> the message, in parts when the target is on another node and the
    /// message's wire size is above the split size. Throws naming the message when it is larger than one array can
    /// hold (about 2 GB): a group's states then must shrink (smaller groups, or checkpoints without replay).</summary>
    public static void Tell(IActorRef target, object message, IActorRef sender, ActorSystem system)
    {
        if (!target.Path.Address.HasGlobalScope || !WireSerializer.Manifests.ContainsKey(message.GetType()))
        {
            target.Tell(message, sender);
            return;
        }
        long size = WireSerializer.Measure(message);
        if (size <= SplitAbove(system)) { target.Tell(message, sender); return; }
        if (size > Array.MaxLength)
            throw new InvalidOperationException(
                $"{message.GetType().Name} is {size / 1e6:F0} MB, more than one message between nodes carries (about 2 GB): " +
                "make the groups smaller (group_size) or leave the replay buffer out of checkpoints (checkpoint_includes_replay=false)");
        var bytes = WireSerializer.Encode(message);
        var manifest = WireSerializer.Manifests[message.GetType()];
        int count = (bytes.Length + PartBytes - 1) / PartBytes;
        long id = Interlocked.Increment(ref _nextId);
        for (int i = 0; i < count; i++)
        {
            int start = i * PartBytes;
            target.Tell(new MessagePart(id, i, count, bytes.Length, manifest, bytes[start..Math.Min(bytes.Length, start + PartBytes)]), sender);
        }
    }
}

/// <summary>
/// Puts the parts of large messages back together, per sender (an actor keeps one). A part out of sequence (its
/// sender restarted, or earlier parts were lost with a node) drops what was gathered from that sender.
/// </summary>
public sealed class PartAssembler
{
    sealed class Open(long id, int count, byte[] bytes)
    {
        public long Id { get; } = id;
        public int Count { get; } = count;
        public byte[] Bytes { get; } = bytes;
        public int Next { get; set; }
        public int Filled { get; set; }
    }

    readonly Dictionary<IActorRef, Open> _open = new();

    /// <summary>Adds a part from <paramref name="sender"/>; returns the whole message after its last part, else null.</summary>
    public object? Add(MessagePart part, IActorRef sender, ActorSystem system)
    {
        if (part.Index == 0)
        {
            if (part.TotalBytes < 0 || part.TotalBytes > Array.MaxLength || part.Count < 1)
                throw new InvalidDataException($"message part: {part.TotalBytes} bytes in {part.Count} parts");
            _open[sender] = new Open(part.Id, part.Count, GC.AllocateUninitializedArray<byte>((int)part.TotalBytes));
        }
        if (!_open.TryGetValue(sender, out var open) || open.Id != part.Id || open.Next != part.Index || part.Count != open.Count
            || open.Filled + part.Bytes.Length > open.Bytes.Length)
        {
            _open.Remove(sender);
            return null;
        }
        part.Bytes.CopyTo(open.Bytes, open.Filled);
        open.Filled += part.Bytes.Length;
        open.Next++;
        if (open.Next < open.Count) return null;
        _open.Remove(sender);
        if (open.Filled != open.Bytes.Length) throw new InvalidDataException($"message part: {open.Filled} of {open.Bytes.Length} bytes arrived");
        var wire = (WireSerializer)system.Serialization.FindSerializerForType(typeof(MessagePart));
        return wire.FromBinary(open.Bytes, part.Manifest);
    }

    /// <summary>Drops what was gathered from <paramref name="sender"/> (it is gone).</summary>
    public void Forget(IActorRef sender) => _open.Remove(sender);
}
