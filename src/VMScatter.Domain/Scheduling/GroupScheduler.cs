using System.Diagnostics;
using System.Numerics;

namespace VMScatter.Domain.Scheduling;

/// <summary>
/// Orders target groups (bit masks of target hosts) so that hosts join and leave few times: going from group A to
/// group B costs |A Δ B| join/leave events, a round starts from the current membership and ends with every host
/// left. That is a shortest Hamiltonian path under Hamming distance; solved with nearest neighbour, then 2-opt and
/// Or-opt until no move helps or the time budget ends. A lower bound (the larger of a minimum spanning tree over all
/// states and two events per host that has to join) says how far from optimal an order can be.
/// </summary>
public static class GroupScheduler
{
    public static int Distance(ulong a, ulong b) => BitOperations.PopCount(a ^ b);

    /// <summary>Join and leave events of visiting <paramref name="order"/> from <paramref name="start"/> and then leaving.</summary>
    public static long Switches(IReadOnlyList<ulong> order, ulong start = 0)
    {
        long total = 0;
        ulong at = start;
        foreach (var g in order) { total += Distance(at, g); at = g; }
        return total + BitOperations.PopCount(at);
    }

    public static IReadOnlyList<ulong> Order(IReadOnlyCollection<ulong> groups, ulong start = 0, TimeSpan? budget = null)
    {
        var clock = Stopwatch.StartNew();
        var limit = budget ?? TimeSpan.FromMilliseconds(200);
        var remaining = groups.Distinct().ToList();
        if (remaining.Count <= 1) return remaining;
        // Nearest neighbour from the start.
        var path = new List<ulong>(remaining.Count);
        ulong at = start;
        while (remaining.Count > 0)
        {
            int best = 0;
            for (int i = 1; i < remaining.Count; i++)
            {
                int d = Distance(at, remaining[i]), bd = Distance(at, remaining[best]);
                if (d < bd || (d == bd && remaining[i] < remaining[best])) best = i;
            }
            at = remaining[best];
            path.Add(at);
            remaining[best] = remaining[^1];
            remaining.RemoveAt(remaining.Count - 1);
        }
        // Nodes: start, path..., end (all left). Improve the inner sequence with fixed ends.
        var nodes = new ulong[path.Count + 2];
        nodes[0] = start;
        path.CopyTo(nodes, 1);
        nodes[^1] = 0;
        bool improved = true;
        while (improved && clock.Elapsed < limit)
        {
            improved = TwoOpt(nodes, clock, limit) | OrOpt(nodes);
        }
        return nodes[1..^1];
    }

    /// <summary>Reverse a segment when that shortens the path.</summary>
    private static bool TwoOpt(ulong[] n, Stopwatch clock, TimeSpan limit)
    {
        bool any = false;
        for (int i = 1; i < n.Length - 2; i++)
        {
            if ((i & 63) == 0 && clock.Elapsed >= limit) break;
            for (int j = i + 1; j < n.Length - 1; j++)
            {
                int delta = Distance(n[i - 1], n[j]) + Distance(n[i], n[j + 1]) - Distance(n[i - 1], n[i]) - Distance(n[j], n[j + 1]);
                if (delta < 0) { Array.Reverse(n, i, j - i + 1); any = true; }
            }
        }
        return any;
    }

    /// <summary>Move a run of one to three groups (either way round) to the place where it costs least.</summary>
    private static bool OrOpt(ulong[] n)
    {
        bool any = false;
        for (int length = 1; length <= 3; length++)
        {
            for (int i = 1; i + length <= n.Length - 1; i++)
            {
                int last = i + length - 1;
                ulong head = n[i], tail = n[last];
                int removeGain = Distance(n[i - 1], head) + Distance(tail, n[last + 1]) - Distance(n[i - 1], n[last + 1]);
                int bestAt = -1, bestCost = removeGain;
                bool bestReversed = false;
                for (int j = 0; j < n.Length - 1; j++)
                {
                    if (j >= i - 1 && j <= last) continue;
                    int baseCost = Distance(n[j], n[j + 1]);
                    int forward = Distance(n[j], head) + Distance(tail, n[j + 1]) - baseCost;
                    int backward = Distance(n[j], tail) + Distance(head, n[j + 1]) - baseCost;
                    if (forward < bestCost) { bestCost = forward; bestAt = j; bestReversed = false; }
                    if (backward < bestCost) { bestCost = backward; bestAt = j; bestReversed = true; }
                }
                if (bestAt < 0) continue;
                var segment = n.AsSpan(i, length).ToArray();
                if (bestReversed) Array.Reverse(segment);
                var list = n.ToList();
                list.RemoveRange(i, length);
                list.InsertRange(bestAt < i ? bestAt + 1 : bestAt + 1 - length, segment);
                list.CopyTo(n);
                any = true;
            }
        }
        return any;
    }

    /// <summary>No order of these groups, from <paramref name="start"/> to all-left, has fewer events than this.</summary>
    public static long LowerBound(IReadOnlyCollection<ulong> groups, ulong start = 0)
    {
        var distinct = groups.Where(g => g != 0).Distinct().ToList();
        if (distinct.Count == 0) return BitOperations.PopCount(start);
        long graphBound;
        if (start == 0)
        {
            // From nobody back to nobody is a tour through the empty state: the 1-tree bound (MST over the groups plus
            // the two cheapest edges from the empty state) holds for every tour.
            graphBound = HeldKarp(distinct.Prepend(0UL).ToArray(), Switches(Order(distinct, budget: TimeSpan.FromMilliseconds(100))));
        }
        else
        {
            // A path from the start through every group to the empty state is a spanning tree of those states.
            graphBound = Mst(distinct.Where(g => g != start).Prepend(start).Append(0UL).ToList());
        }
        // Every host that appears must join (unless already in) and must leave at the end.
        ulong union = distinct.Aggregate(0UL, (a, g) => a | g);
        long perHost = BitOperations.PopCount(union & ~start) + BitOperations.PopCount(union | start);
        return Math.Max(graphBound, perHost);
    }

    /// <summary>
    /// Held–Karp bound for a tour through all <paramref name="nodes"/> (node 0 is the depot): the best 1-tree bound
    /// over node penalties, found by subgradient ascent (Held &amp; Karp 1971; Volgenant &amp; Jonker 1982). Every
    /// penalty vector gives a valid bound, so stopping early only makes it looser, never wrong.
    /// </summary>
    private static long HeldKarp(ulong[] nodes, long upperBound)
    {
        int n = nodes.Length;
        if (n == 2) return 2L * Distance(nodes[0], nodes[1]);
        var pi = new double[n];
        var degree = new int[n];
        double best = double.MinValue;
        double lambda = 2.0;
        int sinceBetter = 0;
        var clock = Stopwatch.StartNew();
        int iterations = (int)Math.Min(2000, 8e7 / ((double)n * n));
        for (int it = 0; it < iterations && clock.ElapsedMilliseconds < 3000 && lambda > 1e-4; it++)
        {
            double bound = OneTree(nodes, pi, degree) - 2 * pi.Sum();
            if (bound > best + 1e-9) { best = bound; sinceBetter = 0; }
            else if (++sinceBetter >= 30) { lambda /= 2; sinceBetter = 0; }
            if (best > upperBound - 1 + 1e-9) break; // integral: cannot get above the known tour
            long norm = 0;
            for (int i = 0; i < n; i++) norm += (long)(degree[i] - 2) * (degree[i] - 2);
            if (norm == 0) break; // the 1-tree is a tour: optimal
            // Polyak's step: proportional to the gap between a known tour and this bound.
            double step = lambda * Math.Max(upperBound - bound, 1) / norm;
            for (int i = 0; i < n; i++) pi[i] += step * (degree[i] - 2);
        }
        return Math.Min(upperBound, (long)Math.Ceiling(best - 1e-6));
    }

    /// <summary>Weight of the minimum 1-tree under penalised distances; fills the node degrees.</summary>
    private static double OneTree(ulong[] nodes, double[] pi, int[] degree)
    {
        int n = nodes.Length;
        Array.Clear(degree);
        double D(int a, int b) => Distance(nodes[a], nodes[b]) + pi[a] + pi[b];
        // MST over nodes 1..n-1 (Prim), then the two cheapest edges from node 0.
        var inTree = new bool[n];
        var dist = new double[n];
        var parent = new int[n];
        Array.Fill(dist, double.MaxValue);
        dist[1] = 0;
        parent[1] = -1;
        double total = 0;
        for (int k = 1; k < n; k++)
        {
            int u = -1;
            for (int i = 1; i < n; i++) if (!inTree[i] && (u < 0 || dist[i] < dist[u])) u = i;
            inTree[u] = true;
            total += dist[u];
            if (parent[u] >= 0) { degree[u]++; degree[parent[u]]++; }
            for (int i = 1; i < n; i++)
                if (!inTree[i]) { double d = D(u, i); if (d < dist[i]) { dist[i] = d; parent[i] = u; } }
        }
        int first = -1, second = -1;
        for (int i = 1; i < n; i++)
        {
            double d = D(0, i);
            if (first < 0 || d < D(0, first)) { second = first; first = i; }
            else if (second < 0 || d < D(0, second)) second = i;
        }
        total += D(0, first) + D(0, second);
        degree[0] = 2; degree[first]++; degree[second]++;
        return total;
    }

    /// <summary>Minimum spanning tree weight under Hamming distance (Prim, O(n²)).</summary>
    private static long Mst(IReadOnlyList<ulong> nodes)
    {
        long total = 0;
        var inTree = new bool[nodes.Count];
        var dist = Enumerable.Repeat(int.MaxValue, nodes.Count).ToArray();
        dist[0] = 0;
        for (int k = 0; k < nodes.Count; k++)
        {
            int u = -1;
            for (int i = 0; i < nodes.Count; i++) if (!inTree[i] && (u < 0 || dist[i] < dist[u])) u = i;
            inTree[u] = true;
            total += dist[u];
            for (int i = 0; i < nodes.Count; i++) if (!inTree[i]) dist[i] = Math.Min(dist[i], Distance(nodes[u], nodes[i]));
        }
        return total;
    }
}
