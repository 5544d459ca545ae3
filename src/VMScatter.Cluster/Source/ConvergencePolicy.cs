using System.Globalization;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain.Pages;

namespace VMScatter.Cluster.Source;

/// <summary>What a wave knows when its dirty pages are collected, before it decides on its next round.</summary>
/// <param name="DirtyPages">Pages the wave's guests dirtied since their previous collection.</param>
/// <param name="DirtySeconds">Time since that collection (the dirty rate is measured over it): after a wave's first round, that round's time.</param>
/// <param name="DeferredPages">The wave's own pages round 0 left to it (its first round only).</param>
/// <param name="WirePerPage">Encoded bytes per raw byte seen so far (1 before anything was sent).</param>
/// <param name="RateBytesPerSecond">The best rate a round reached (the configured assumption before any).</param>
/// <param name="WaveRounds">Pre-copy rounds the wave went through, round 0 included.</param>
/// <param name="WaveLabel">"wave 2 of 4: " with several waves, empty with one.</param>
public sealed record ConvergenceInput(
    int DirtyPages,
    double DirtySeconds,
    int DeferredPages,
    double WirePerPage,
    double RateBytesPerSecond,
    int WaveRounds,
    string WaveLabel = "")
{
    /// <summary>The wave's guests whose hypervisor stopped them already (QEMU's own pre-copy converged).</summary>
    public int StoppedGuests { get; init; }

    /// <summary>Pages the wave's previous round carried, in <see cref="DirtySeconds"/>; null in its first round (round 0 carried them all).</summary>
    public int? PreviousRoundPages { get; init; }
}

/// <param name="StopAndCopy">The next round pauses the wave's VMs and sends the rest.</param>
/// <param name="Fits">The rest fits the downtime target (false with <paramref name="StopAndCopy"/>: forced at the round limit).</param>
/// <param name="HoldBack">The dirty pages wait for the stop-and-copy; the next round sends only the deferred ones.</param>
/// <param name="PagesThisRound">Pages the next round carries.</param>
/// <param name="Account">The reasoning in one line, for the report and the log.</param>
public sealed record ConvergenceDecision(bool StopAndCopy, bool Fits, bool HoldBack, int PagesThisRound, string Account)
{
    /// <summary>The rate the wave's guests dirtied pages at, measured over <see cref="ConvergenceInput.DirtySeconds"/>.</summary>
    public double DirtyPagesPerSecond { get; init; }
}

/// <param name="Fits">The rest found at the pause fits the send budget: the stop-and-copy goes on.</param>
/// <param name="AnotherRound">It does not, and the round limit leaves room for one more pre-copy round.</param>
/// <param name="Account">The reasoning in one line, with the numbers.</param>
public sealed record PauseCheck(bool Fits, bool AnotherRound, string Account);

/// <summary>
/// When a wave stops and copies: once the rest, as it will go on the wire, can be sent at the best rate a round reached
/// within the downtime target less what the handover itself takes; or at the round limit. A rest that fits but would
/// take longer than <paramref name="PauseSendFloor"/> to send first gets one more pre-copy round when that round is
/// expected to halve it: the pause is the guest's cost, a short round is the migration's. Pure: the source migration
/// actor feeds it what it measured.
/// </summary>
public sealed record ConvergencePolicy(int MaxRounds, int DowntimeTargetMs, TimeSpan HandoverReserve, bool HoldBackAllowed, TimeSpan PauseSendFloor)
{
    public static ConvergencePolicy Of(MigrationOptions options, SourceSettings settings) =>
        new(options.MaxRounds, options.DowntimeTargetMs, settings.HandoverReserve, options.SetAsideDirty, settings.PauseSendFloor);

    /// <summary>Of the downtime target, what the last round may spend sending: the rest goes to the handover (at least a quarter is kept for sending).</summary>
    public double SendBudgetMs => Math.Max(DowntimeTargetMs / 4.0, DowntimeTargetMs - HandoverReserve.TotalMilliseconds);

    public ConvergenceDecision Decide(ConvergenceInput m)
    {
        int pages = m.DirtyPages + m.DeferredPages;
        double restSeconds = SendSeconds(pages, m);
        double dirtyRate = m.DirtyPages / Math.Max(1e-3, m.DirtySeconds);
        bool fits = restSeconds * 1000 <= SendBudgetMs;
        bool atLimit = m.WaveRounds >= Math.Max(1, MaxRounds) - 1;
        // Pages round 0 deferred are not dirty: they go while the guests run, never inside a pause (unless at the round
        // limit). Sent in the stop-and-copy, they made a later wave's pause 140-300 ms longer in the QEMU bench: the rate
        // estimate is the wire's, and reading and compressing them took longer than sending.
        // A guest its hypervisor stopped already is in its pause: more pre-copy rounds would only lengthen it.
        bool canStop = fits && m.DeferredPages == 0;
        double expectedAfter = 0;
        bool shorten = canStop && !atLimit && m.StoppedGuests == 0 && Shortens(m, pages, restSeconds, dirtyRate, out expectedAfter);
        bool stopAndCopy = (canStop && !shorten) || atLimit || m.StoppedGuests > 0;
        string account = string.Create(CultureInfo.InvariantCulture,
            $"{m.WaveLabel}{(fits ? "converged" : "NOT converged")} after {m.WaveRounds} pre-copy rounds: {pages} dirty pages left (guests dirtying {dirtyRate:0} pages/s), " +
            $"≈ {restSeconds * 1000:0} ms to send at {m.RateBytesPerSecond / (1 << 20):0.0} MiB/s against {SendBudgetMs:0} ms of a {DowntimeTargetMs} ms target " +
            $"({DowntimeTargetMs - SendBudgetMs:0} ms kept for the handover)") +
            (m.StoppedGuests > 0 ? $"; QEMU's own pre-copy stopped {m.StoppedGuests} of the wave's guests already" : "") +
            (shorten ? string.Create(CultureInfo.InvariantCulture, $"; one more pre-copy round first, expected to leave ≈ {expectedAfter:0} pages (≈ {SendSeconds((long)expectedAfter, m) * 1000:0} ms) for the pause") : "");
        // A page the guest already rewrote during the migration is likely rewritten again (its working set): when the
        // stop-and-copy can take these pages, and what the guest will dirty while this round sends the deferred ones,
        // they wait for it instead of going now and again then.
        bool holdBack = false;
        if (!stopAndCopy && m.DeferredPages > 0 && m.DirtyPages > 0 && HoldBackAllowed)
        {
            double expectedPages = m.DirtyPages + dirtyRate * SendSeconds(m.DeferredPages, m);
            holdBack = SendSeconds((long)expectedPages, m) * 1000 <= SendBudgetMs;
        }
        return new ConvergenceDecision(stopAndCopy, fits, holdBack, holdBack ? m.DeferredPages : pages, account) { DirtyPagesPerSecond = dirtyRate };
    }

    /// <summary>
    /// Whether one more pre-copy round is worth its time: the rest takes longer than the floor to send, and the guests,
    /// at their measured rate, are expected to dirty at most half of it while that round runs. The round is expected to
    /// take what the wave's last round took per page (whatever limited it, the link or the cores) and no less than the
    /// link needs; so a wave whose last round did not halve what was left (a working set rewritten as fast as it goes)
    /// stops here.
    /// </summary>
    private bool Shortens(ConvergenceInput m, int pages, double restSeconds, double dirtyRate, out double expectedAfter)
    {
        double roundSeconds = restSeconds;
        if (m.PreviousRoundPages is > 0 and int previous) roundSeconds = Math.Max(roundSeconds, m.DirtySeconds * pages / previous);
        expectedAfter = dirtyRate * roundSeconds;
        return restSeconds > PauseSendFloor.TotalSeconds && 2 * expectedAfter <= pages;
    }

    /// <summary>
    /// A stop-and-copy decided as fitting, checked against the rest its pause actually found (<paramref name="pagesAtPause"/>:
    /// the pages the guests wrote between the decision's collection and the pause come with it). When that rest no longer
    /// fits, the paused VMs may run again and the round go as one more pre-copy round, unless the round limit is reached.
    /// </summary>
    public PauseCheck AtPause(ConvergenceInput decided, int pagesAtPause)
    {
        double restSeconds = SendSeconds(pagesAtPause, decided);
        bool fits = restSeconds * 1000 <= SendBudgetMs;
        bool anotherRound = !fits && decided.WaveRounds < Math.Max(1, MaxRounds) - 1;
        string outcome = fits ? "stop-and-copy" : anotherRound ? "the VMs run again and it goes as one more pre-copy round" : $"NOT converged: the round limit ({MaxRounds}) forces it";
        string account = string.Create(CultureInfo.InvariantCulture,
            $"{decided.WaveLabel}the pause after {decided.WaveRounds} pre-copy rounds found {pagesAtPause} dirty pages (decided on {decided.DirtyPages + decided.DeferredPages}), " +
            $"≈ {restSeconds * 1000:0} ms to send against {SendBudgetMs:0} ms of a {DowntimeTargetMs} ms target: {outcome}");
        return new PauseCheck(fits, anotherRound, account);
    }

    private static double SendSeconds(long pages, ConvergenceInput m) => Page.BytesOf(pages) * m.WirePerPage / m.RateBytesPerSecond;
}
