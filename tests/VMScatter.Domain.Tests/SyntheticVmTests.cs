using VMScatter.Domain;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Synthetic;
using Xunit;

namespace VMScatter.Domain.Tests;

public class SyntheticVmTests
{
    private static readonly SyntheticGuestModel Small = new() { MemoryBytes = 4L << 20, DirtyPagesPerSecond = 0, WritableWorkingSetPages = 64 };

    [Fact]
    public void Same_spec_and_seed_give_byte_identical_guests_and_another_seed_does_not()
    {
        var a = SyntheticFleet.Create(new SyntheticFleetSpec(3, Small, 7), runWorkload: false);
        var b = SyntheticFleet.Create(new SyntheticFleetSpec(3, Small, 7), runWorkload: false);
        var c = SyntheticFleet.Create(new SyntheticFleetSpec(3, Small, 8), runWorkload: false);
        for (int v = 0; v < 3; v++)
        {
            Assert.Equal(MemoryDigest.Compute(a[v], []), MemoryDigest.Compute(b[v], []));
            Assert.NotEqual(MemoryDigest.Compute(a[v], []), MemoryDigest.Compute(c[v], []));
        }
    }

    [Fact]
    public void Memory_is_made_of_the_model_fractions_and_vms_share_os_and_application_pages()
    {
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(4, Small, 1, OsImages: 1, Applications: 2), runWorkload: false);
        int pages = fleet[0].PageCount;
        var page = new byte[Page.Size];
        var perVm = fleet.Select(vm =>
        {
            var set = new HashSet<ContentHash>();
            int zero = 0;
            for (int p = 0; p < pages; p++)
            {
                vm.ReadPage(p, page);
                if (Page.IsZero(page)) zero++;
                else set.Add(ContentHash.Compute(page));
            }
            return (zero, set);
        }).ToArray();
        Assert.Equal((int)(pages * Small.ZeroFraction), perVm[0].zero);
        int os = (int)(pages * Small.OsImageFraction), app = (int)(pages * Small.ApplicationFraction);
        // Any two VMs share at least the OS image; two with the same application share that too.
        var sameApp = fleet.Select((vm, i) => (vm.Application, i)).GroupBy(x => x.Application).First(g => g.Count() > 1).Select(x => x.i).ToArray();
        var otherApp = Enumerable.Range(0, 4).First(i => fleet[i].Application != fleet[sameApp[0]].Application);
        Assert.Equal(os + app, perVm[sameApp[0]].set.Intersect(perVm[sameApp[1]].set).Count());
        Assert.Equal(os, perVm[sameApp[0]].set.Intersect(perVm[otherApp].set).Count());
        // Duplicates inside one VM repeat a few contents.
        int nonZero = pages - perVm[0].zero;
        int dup = (int)(pages * Small.DuplicateFraction);
        Assert.Equal(nonZero - dup + Math.Min(dup, Small.DuplicateContents), perVm[0].set.Count);
    }

    [Fact]
    public async Task Writes_are_logged_as_dirty_until_collected_and_a_paused_guest_does_not_write()
    {
        using var vm = SyntheticFleet.Create(new SyntheticFleetSpec(1, Small, 3), runWorkload: false).Single();
        vm.StartDirtyLogging();
        vm.WritePageContent(5, 0xABCDEF);
        vm.WritePageContent(700, 0);
        // Looking at the log does not collect it.
        Assert.Equal((true, true, false), (vm.IsDirty(5), vm.IsDirty(700), vm.IsDirty(6)));
        Assert.Equal([5, 700], vm.CollectDirtyPages());
        Assert.False(vm.IsDirty(5));
        Assert.Empty(vm.CollectDirtyPages());
        vm.WritePages(10);
        var dirty = vm.CollectDirtyPages();
        Assert.InRange(dirty.Length, 1, 10);
        await vm.PauseAsync();
        Assert.Throws<InvalidOperationException>(() => vm.WritePages(1));
        var state = await vm.CaptureDeviceStateAsync();
        Assert.Contains("writes=12", System.Text.Encoding.UTF8.GetString(state));
        await vm.ResumeAsync();
        vm.WritePages(1);
        Assert.Equal(VmRunState.Running, vm.State);
    }

    [Fact]
    public void Running_workload_dirties_pages_of_its_working_set_only()
    {
        var model = Small with { DirtyPagesPerSecond = 5000, WritableWorkingSetPages = 32 };
        using var vm = SyntheticFleet.Create(new SyntheticFleetSpec(1, model, 3)).Single();
        vm.StartDirtyLogging();
        var dirty = new HashSet<int>();
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (dirty.Count < 32 && DateTime.UtcNow < deadline)
        {
            SpinWait.SpinUntil(() => vm.Writes > 0, 50);
            foreach (var p in vm.CollectDirtyPages()) dirty.Add(p);
        }
        Assert.True(vm.Writes > 0);
        Assert.InRange(dirty.Count, 1, 32);
    }

    [Fact]
    public void Invalid_models_are_rejected_with_a_reason()
    {
        Assert.Contains("exceed 1", Assert.Throws<ArgumentException>(() => (Small with { ZeroFraction = 0.9, OsImageFraction = 0.5 }).Validate()).Message);
        Assert.Contains("multiple of 4096", Assert.Throws<ArgumentException>(() => (Small with { MemoryBytes = 5000 }).Validate()).Message);
    }
    [Fact]
    public void A_page_is_unwritten_since_a_collection_until_it_is_written_and_the_generation_says_which_collection()
    {
        using var vm = SyntheticFleet.Create(new SyntheticFleetSpec(1, Small, 3), runWorkload: false).Single();
        Assert.False(vm.UnwrittenSince(5, 0));                  // not logging: nothing can be proven
        vm.StartDirtyLogging();
        Assert.Equal(0, vm.LogGeneration);
        Assert.True(vm.UnwrittenSince(5, 0));
        vm.WritePageContent(5, 0xAB);
        Assert.False(vm.UnwrittenSince(5, 0));                  // dirty
        Assert.Equal([5], vm.CollectDirtyPages());
        Assert.Equal(1, vm.LogGeneration);
        Assert.False(vm.UnwrittenSince(5, 0));                  // collected since: not the bytes it held at generation 0
        Assert.True(vm.UnwrittenSince(5, 1));                   // the bytes it held when collection 1 took it
        Assert.True(vm.UnwrittenSince(6, 0));
        vm.WritePageContent(5, 0xCD);
        Assert.False(vm.UnwrittenSince(5, 1));
    }

    [Fact]
    public async Task A_page_copied_while_the_guest_writes_it_is_never_proven_unwritten_with_the_new_bytes()
    {
        // The source reads contents from guest pages and sends them only if the log proves the page unwritten since;
        // a write is logged before its first byte lands, so a copy torn by a write is never taken for the old bytes.
        using var vm = SyntheticFleet.Create(new SyntheticFleetSpec(1, Small, 3), runWorkload: false).Single();
        vm.StartDirtyLogging();
        var before = Enumerable.Range(0, vm.PageCount).Select(p => { var b = new byte[Page.Size]; vm.ReadPage(p, b); return b; }).ToArray();
        // Page by page: the reader starts copying the page, the guest writes it meanwhile, and moves on once the reader
        // has seen it refused (so every page is read before, during and after its write).
        int current = -1, reading = -1, refusedOn = -1;
        bool done = false;
        var writer = Task.Run(() =>
        {
            var spin = new SpinWait();
            for (int p = 0; p < vm.PageCount; p++)
            {
                Volatile.Write(ref current, p);
                while (Volatile.Read(ref reading) != p) spin.SpinOnce();
                vm.WritePageContent(p, 0x1000UL + (ulong)p);
                while (Volatile.Read(ref refusedOn) != p) spin.SpinOnce();
            }
            Volatile.Write(ref done, true);
        });
        var copy = new byte[Page.Size];
        int refused = 0, wrong = 0;
        while (!Volatile.Read(ref done))
        {
            int p = Volatile.Read(ref current);
            if (p < 0) continue;
            Volatile.Write(ref reading, p);
            vm.ReadPage(p, copy);
            if (!vm.UnwrittenSince(p, 0))
            {
                refused++;
                Volatile.Write(ref refusedOn, p);
                continue;
            }
            if (!copy.AsSpan().SequenceEqual(before[p])) wrong++;
        }
        await writer;
        Assert.Equal(0, wrong);
        Assert.True(refused >= vm.PageCount);
        Assert.All(Enumerable.Range(0, vm.PageCount), p => Assert.False(vm.UnwrittenSince(p, 0)));
    }
}
