using System.Net;
using System.Net.Sockets;
using System.Numerics;
using VMScatter.DataPlane.Multicast;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain.Scheduling;

namespace VMScatter.DataPlane.Source;

/// <summary>
/// The multicast channels of <see cref="GroupTransport.Multicast"/>. Channel 0 is opened with every target connected at
/// the start as its members (the check that multicast works here; if it cannot be set up, the migration goes by the relay
/// chain). Before each round, <see cref="ChannelPlan"/> opens channels (each its own IP multicast group) for the round's
/// groups that gain most from one, in the round's group order, and their members are told to join on their connection.
/// A content batch goes once on the smallest channel holding its group's members, with the source's tag for each, under
/// that member's own key; the round's TCP frames after the batches (withdrawn, device state, round ends) go only once every
/// member holds them (<see cref="MulticastSender.EndRoundAsync"/>). A member a channel drops, or that does not catch up,
/// is a failed target. A target whose part is over leaves every channel it is on (the channels stop waiting for it, and
/// its receiver closes its memberships as it closes); targets added later are on no channel and get content by TCP.
/// </summary>
public sealed partial class DataPlaneSender
{
    private sealed class ChannelSlot(int id, MulticastSender sender, ulong members)
    {
        public int Id { get; } = id;
        public MulticastSender Sender { get; } = sender;
        /// <summary>Under <see cref="_channelGate"/>.</summary>
        public ulong Members { get; set; } = members;
        /// <summary>Members told to join (a join counted); under <see cref="_channelGate"/>.</summary>
        public ulong Told { get; set; }
        /// <summary>The builder's only.</summary>
        public int MessagesThisRound { get; set; }
    }

    private readonly object _channelGate = new();
    private readonly List<ChannelSlot> _channels = new();
    // Each channel's members, index = channel number: replaced (never changed) under the gate, read without it.
    private ulong[] _channelMasks = [];
    // Targets on channels at all: those connected when channel 0 opened, until they leave.
    private long _channelMembers;
    private bool _channelTried;
    private long _channelJoins, _channelLeaves;

    private ulong ChannelMembers => (ulong)Interlocked.Read(ref _channelMembers);

    // Lock order: a channel's own gate, then this one (a channel drops a receiver from under its gate); so a channel's
    // counters are read, and its members removed, outside this gate.
    private ChannelSlot[] Slots
    {
        get { lock (_channelGate) return _channels.ToArray(); }
    }

    private long ChannelBytes => Slots.Sum(c => c.Sender.Stats.Bytes);

    /// <summary>The multicast channels' sender counters summed (NACKs, repairs), or null without a channel.</summary>
    public MulticastSenderStats? ChannelStats
    {
        get
        {
            var each = Slots.Select(c => c.Sender.Stats).ToArray();
            return each.Length == 0 ? null : each.Aggregate((a, b) => new(a.Datagrams + b.Datagrams, a.Bytes + b.Bytes, a.Repairs + b.Repairs, a.RepairBytes + b.RepairBytes,
                a.Nacks + b.Nacks, a.FeedbackRejected + b.FeedbackRejected, a.DroppedReceivers.Concat(b.DroppedReceivers).Distinct().Order().ToArray()));
        }
    }

    /// <summary>
    /// Channels opened, and the joins and leaves of their members: a join per member told to join a channel; a leave per
    /// member that left one (its part over, or lost: its receiver closes its memberships) and, at the end, per membership
    /// still open (closed with the migration).
    /// </summary>
    public (int Channels, long Joins, long Leaves) ChannelMoves
    {
        get
        {
            lock (_channelGate)
                return (_channels.Count, Interlocked.Read(ref _channelJoins),
                    Interlocked.Read(ref _channelLeaves) + _channels.Sum(c => BitOperations.PopCount(c.Members & c.Told)));
        }
    }

    /// <summary>
    /// These targets leave the multicast channels (their part is over, or they are lost): the channels no longer wait for
    /// them. Content for them, should they receive again, goes by TCP.
    /// </summary>
    public void LeaveChannel(ulong targets)
    {
        long seen;
        do seen = Interlocked.Read(ref _channelMembers);
        while (Interlocked.CompareExchange(ref _channelMembers, seen & ~(long)targets, seen) != seen);
        var removed = new List<(ChannelSlot Slot, int Target)>();
        lock (_channelGate)
        {
            foreach (var slot in _channels)
            {
                foreach (int t in Targets(slot.Members & targets)) removed.Add((slot, t));
                Interlocked.Add(ref _channelLeaves, BitOperations.PopCount(slot.Members & slot.Told & targets));
                slot.Members &= ~targets;
            }
            _channelMasks = _channels.Select(c => c.Members).ToArray();
        }
        foreach (var (slot, t) in removed) slot.Sender.Remove(t);
    }

    /// <summary>
    /// A member that never joined one channel (dropped by it, nothing sent on it yet) leaves that channel only: what it
    /// holds on others stands. On no channel any more, its content goes by TCP.
    /// </summary>
    private void NeverJoined(ChannelSlot slot, int target)
    {
        ulong bit = 1UL << target;
        lock (_channelGate)
        {
            if ((slot.Members & bit) == 0) return;
            if ((slot.Told & bit) != 0) Interlocked.Increment(ref _channelLeaves);
            slot.Members &= ~bit;
            _channelMasks = _channels.Select(c => c.Members).ToArray();
            if (_channels.All(c => (c.Members & bit) == 0))
            {
                long seen;
                do seen = Interlocked.Read(ref _channelMembers);
                while (Interlocked.CompareExchange(ref _channelMembers, seen & ~(long)bit, seen) != seen);
            }
        }
    }

    /// <summary>
    /// Sets up channel 0 (its sockets in this host's namespace, on its data-plane address) with the targets connected now
    /// as members, and tells each on its connection to join. If it cannot be set up, the migration goes by the relay chain
    /// (<see cref="TransportFallback"/> says why).
    /// </summary>
    private async Task OpenFirstChannelAsync(CancellationToken cancellationToken)
    {
        if (_channelTried) return;
        _channelTried = true;
        ulong members = 0;
        for (int t = 0; t < TargetCount; t++)
            if (!IsSkipped(t) && _clients[t] is not null) members |= 1UL << t;
        ChannelSlot slot;
        try
        {
            if (_options.Multicast.Problem() is { } bad) throw new ArgumentException(bad);
            if (members == 0) throw new InvalidOperationException("no target is connected");
            Interlocked.Exchange(ref _channelMembers, (long)members);
            slot = OpenChannel(members);
        }
        catch (Exception e) when (e is SocketException or ArgumentException or InvalidOperationException)
        {
            Interlocked.Exchange(ref _channelMembers, 0);
            _fallbacks.Enqueue($"multicast channel not set up ({e.Message}): content goes by the relay chain");
            _transportUsed = GroupTransport.RelayChain;
            return;
        }
        var open = OpenFrame(slot);
        foreach (int t in Targets(members))
        {
            try
            {
                await WriteDirectAsync(t, FrameType.ChannelOpen, open, cancellationToken).ConfigureAwait(false);
                Told(slot, t);
            }
            catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException && !cancellationToken.IsCancellationRequested)
            {
                TargetFailed(t, $"writing to target {t} at {_targets[t]}: {e.Message}");
            }
        }
    }

    /// <summary>The next channel, with these members; throws <see cref="SocketException"/> and the like if its sockets cannot be made.</summary>
    private ChannelSlot OpenChannel(ulong members)
    {
        var settings = _options.Multicast;
        int id;
        lock (_channelGate) id = _channels.Count;
        // The host's data-plane address: the one its connections to the targets leave from.
        var local = settings.Interface ?? ((IPEndPoint)_clients[BitOperations.TrailingZeroCount(members)]!.Client.LocalEndPoint!).Address;
        if (local.IsIPv4MappedToIPv6) local = local.MapToIPv4(); // a dual-mode socket's view of an IPv4 connection
        var options = settings.ToOptions(settings.GroupFor(_migrationId, id), local, settings.MaxMessageBytes, _options.LinkBitsPerSecond, seed: 1 + id, _options.Place);
        var key = DataPlaneKeys.ForChannel(_master, _migrationId);
        var sender = new MulticastSender(_migrationId, key, id, Targets(members), options, _egress);
        var slot = new ChannelSlot(id, sender, members);
        sender.ReceiverDropped += (t, neverJoined) =>
        {
            if (!neverJoined)
            {
                TargetFailed(t, $"target {t} at {_targets[t]} left multicast channel {id}: no acknowledgement for {settings.ReceiverTimeout.TotalSeconds:0.#} s");
                return;
            }
            // It could not join (its receiver stays on its connection): it missed nothing here, and gets this channel's
            // share by TCP (all of its content, once it is on no channel).
            _fallbacks.Enqueue($"target {t} at {_targets[t]} did not join multicast channel {id} within {settings.ReceiverTimeout.TotalSeconds:0.#} s: what it would get there goes by TCP");
            NeverJoined(slot, t);
        };
        ulong stale;
        lock (_channelGate)
        {
            _channels.Add(slot);
            // A target that left (or was dropped) while the channel was made: not a member.
            stale = slot.Members & ~ChannelMembers;
            slot.Members &= ~stale;
            _channelMasks = _channels.Select(c => c.Members).ToArray();
        }
        foreach (int t in Targets(stale)) sender.Remove(t);
        return slot;
    }

    private void Told(ChannelSlot slot, int target)
    {
        lock (_channelGate) slot.Told |= 1UL << target;
        Interlocked.Increment(ref _channelJoins);
    }

    private byte[] OpenFrame(ChannelSlot slot) =>
        Records.WriteChannelOpen(new ChannelOpen(slot.Id, slot.Sender.Group, slot.Sender.FeedbackEndPoint, _options.Multicast.MaxMessageBytes));

    /// <summary>
    /// Before a round's content: the channels the plan wants for this round's groups are opened, their members told to
    /// join on the frame queue (in order with the round's other frames); a channel that cannot be made leaves the pool as it is.
    /// </summary>
    private async Task BeginChannelRoundAsync(RoundTransfer round, CancellationToken cancellationToken)
    {
        if (_transportUsed != GroupTransport.Multicast) return;
        ulong[] open;
        lock (_channelGate)
        {
            foreach (var slot in _channels) slot.MessagesThisRound = 0;
            open = _channelMasks;
        }
        if (open.Length == 0) return;
        ulong eligible = ChannelMembers & ~Skipped;
        var groups = round.Groups.Select(g => (g.TargetMask & eligible, (long)g.ContentIds.Count));
        foreach (ulong members in ChannelPlan.ToOpen(open, _options.Multicast.Channels, groups))
        {
            ChannelSlot slot;
            try { slot = OpenChannel(members); }
            catch (Exception e) when (e is SocketException or ArgumentException or InvalidOperationException) { break; }
            var frame = OpenFrame(slot);
            ulong told;
            lock (_channelGate) told = slot.Members;
            foreach (int t in Targets(told))
            {
                await SendFrameAsync(t, FrameType.ChannelOpen, frame, cancellationToken).ConfigureAwait(false);
                Told(slot, t);
            }
        }
    }

    /// <summary>
    /// Sends a content batch once on the smallest channel holding every member of <paramref name="mask"/> that is on
    /// channels (when there are at least two); returns the hosts it reached that way (the others get it by TCP).
    /// </summary>
    private async Task<ulong> SendOnChannelAsync(int round, ulong mask, byte[] payload, int length, int count, CancellationToken cancellationToken)
    {
        ulong members;
        ChannelSlot slot;
        while (true)
        {
            members = mask & ChannelMembers & ~Skipped;
            if (BitOperations.PopCount(members) < 2) return 0;
            int c = ChannelPlan.Choose(Volatile.Read(ref _channelMasks), members);
            if (c < 0) return 0;
            lock (_channelGate) slot = _channels[c];
            if (slot.Sender.Joined) break;
            // Its first batch waits until every member joined; one that never does leaves it (and perhaps every channel),
            // so the batch's members and channel are chosen again after.
            await slot.Sender.WhenJoinedAsync(cancellationToken).ConfigureAwait(false);
        }
        var message = new byte[Records.ChannelContentHeader + length + Records.ChannelTagsSize(members)];
        ulong sequence = NextSequence();
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(message, sequence);
        payload.AsSpan(0, length).CopyTo(message.AsSpan(Records.ChannelContentHeader));
        var signed = message.AsSpan(Records.ChannelContentHeader, length);
        Records.WriteContentBatchHeader(signed, round, members, count);
        WriteSourceTags(Targets(members), sequence, signed, message.AsSpan(Records.ChannelContentHeader + length));
        // A full window waits for the slowest member's acknowledgements: one that stays behind this long is lost.
        await OnChannelWithinAsync(slot, _options.WriteTimeout, "held the multicast window", async token => await slot.Sender.SendAsync(message, token).ConfigureAwait(false), cancellationToken).ConfigureAwait(false);
        slot.MessagesThisRound++;
        Interlocked.Add(ref _contentRecords, count);
        // Every member had joined, so one that left since is a failed target (skipped): the others have it.
        return members;
    }

    /// <summary>Every channel that carried something this round ends it, together: until each of its members holds all of it.</summary>
    private async Task EndChannelRoundAsync(int round, CancellationToken cancellationToken)
    {
        var used = Slots.Where(c => c.MessagesThisRound > 0).ToArray();
        await Task.WhenAll(used.Select(slot => OnChannelWithinAsync(slot, _options.RoundTimeout, "did not hold the round's multicast datagrams",
            token => slot.Sender.EndRoundAsync(round, token), cancellationToken))).ConfigureAwait(false);
    }

    /// <summary>
    /// Runs a channel step that waits on its members; when it has not finished within <paramref name="limit"/>, the member
    /// furthest behind (alive: the channel drops silent ones itself) is a failed target, it leaves the channels, and the
    /// step goes on with the others for another bound.
    /// </summary>
    private async Task OnChannelWithinAsync(ChannelSlot slot, TimeSpan limit, string why, Func<CancellationToken, Task> step, CancellationToken cancellationToken)
    {
        while (true)
        {
            using var bounded = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            bounded.CancelAfter(limit);
            try
            {
                await step(bounded.Token).ConfigureAwait(false);
                return;
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                var behind = slot.Sender.Behind();
                foreach (int t in behind) TargetFailed(t, $"target {t} at {_targets[t]} {why} (channel {slot.Id}) for {limit.TotalSeconds:0.#} s");
                if (behind.Count == 0) throw new TimeoutException($"multicast channel {slot.Id} made no progress for {limit.TotalSeconds:0.#} s with every member caught up");
            }
        }
    }

    private async Task DisposeChannelsAsync()
    {
        foreach (var slot in Slots) await slot.Sender.DisposeAsync().ConfigureAwait(false);
    }
}
