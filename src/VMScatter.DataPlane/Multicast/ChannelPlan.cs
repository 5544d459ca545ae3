using System.Numerics;

namespace VMScatter.DataPlane.Multicast;

/// <summary>
/// Which multicast channels of a migration's pool carry which groups. Every channel is its own IP multicast group, so a
/// switch with IGMP snooping copies a channel's datagrams only onto its members' links: a group's content on a channel
/// whose members are exactly the group reaches no one else. The pool is bounded (sockets and feedback per channel), so
/// the groups that would waste most on the smallest channel covering them get channels of their own; the rest share one.
/// Pure: the data-plane sender holds the channels and asks.
/// </summary>
public static class ChannelPlan
{
    /// <summary>
    /// The member masks to open channels for before a round goes out, in the round's (the group schedule's) order: of the
    /// round's groups (members on channels only; fewer than two go by TCP), those without a channel of their own, most
    /// bytes saved first (contents × members of the covering channel the group would otherwise use and does not need),
    /// as many as the pool has room for.
    /// </summary>
    public static IReadOnlyList<ulong> ToOpen(IReadOnlyList<ulong> open, int capacity, IEnumerable<(ulong Members, long Contents)> groups)
    {
        int room = capacity - open.Count;
        if (room <= 0) return [];
        var order = new List<ulong>();
        var saved = new Dictionary<ulong, long>();
        foreach (var (members, contents) in groups)
        {
            if (BitOperations.PopCount(members) < 2 || contents <= 0 || open.Contains(members)) continue;
            int cover = Choose(open, members) is int c and >= 0 ? BitOperations.PopCount(open[c]) : 2 * BitOperations.PopCount(members);
            long waste = contents * (cover - BitOperations.PopCount(members));
            if (saved.TryGetValue(members, out var s)) saved[members] = s + waste;
            else { saved[members] = waste; order.Add(members); }
        }
        var chosen = saved.Where(p => p.Value > 0).OrderByDescending(p => p.Value).ThenBy(p => p.Key).Take(room).Select(p => p.Key).ToHashSet();
        return order.Where(chosen.Contains).ToArray();
    }

    /// <summary>
    /// The channel to carry a batch for these members: the one whose members are exactly them, else the smallest that
    /// holds them all (the others on it ignore the batch), else -1 (no channel holds them all: by TCP).
    /// </summary>
    public static int Choose(IReadOnlyList<ulong> open, ulong members)
    {
        int best = -1;
        for (int c = 0; c < open.Count; c++)
        {
            if ((open[c] & members) != members) continue;
            if (best < 0 || BitOperations.PopCount(open[c]) < BitOperations.PopCount(open[best])) best = c;
        }
        return best;
    }
}
