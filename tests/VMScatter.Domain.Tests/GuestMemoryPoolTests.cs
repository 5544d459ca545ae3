using VMScatter.Domain.Pages;
using Xunit;

namespace VMScatter.Domain.Tests;

public sealed class GuestMemoryPoolTests
{
    private const long MiB = 1L << 20;
    private static readonly int PagesPerMiB = (int)(MiB / Page.Size);

    [Fact]
    public void A_range_comes_back_zeroed_for_the_next_guest_and_populating_keeps_what_guests_wrote()
    {
        using var pool = new GuestMemoryPool(8 * MiB);
        var first = pool.TryRent(2 * PagesPerMiB)!;
        Assert.True(first.Pooled);
        var written = new byte[Page.Size];
        Random.Shared.NextBytes(written);
        first.WritePage(5, written);

        // Backing the pool while a guest's memory is in use must not touch its bytes.
        Assert.Null(pool.Populate());
        Assert.Equal(pool.CapacityBytes, pool.PopulatedBytes);
        var read = new byte[Page.Size];
        first.ReadPage(5, read);
        Assert.Equal(written, read);

        first.Dispose();
        // First fit: the next guest of that size gets the same range, and it reads as zero.
        using var second = pool.TryRent(2 * PagesPerMiB)!;
        for (int p = 0; p < second.PageCount; p++)
        {
            second.ReadPage(p, read);
            Assert.True(Page.IsZero(read), $"page {p} of a reused range is not zero");
        }
    }

    [Fact]
    public void Guests_fit_within_the_capacity_and_returned_neighbours_merge_into_one_range_again()
    {
        using var pool = new GuestMemoryPool(8 * MiB);
        // Sizes round up to 2 MiB (huge-page aligned ranges): four 1.5 MiB guests fill 8 MiB.
        var guests = Enumerable.Range(0, 4).Select(_ => pool.TryRent(3 * PagesPerMiB / 2)).ToArray();
        Assert.All(guests, g => Assert.NotNull(g));
        Assert.Null(pool.TryRent(1));
        Assert.Equal(0, pool.FreeBytes);

        // Returned out of order; the whole capacity must be one range again.
        foreach (int i in new[] { 1, 3, 0, 2 }) guests[i]!.Dispose();
        Assert.Equal(8 * MiB, pool.FreeBytes);
        using var whole = pool.TryRent(8 * PagesPerMiB);
        Assert.NotNull(whole);
    }

    [Fact]
    public void The_synthetic_target_backend_takes_memory_from_its_pool_and_maps_fresh_memory_when_the_pool_is_full()
    {
        using var pool = new GuestMemoryPool(2 * MiB);
        var backend = new Synthetic.SyntheticTargetBackend(pool);
        var vm = new VmDescription(new VmId("vm"), 2 * MiB, 1, "synthetic", "");
        using var pooled = (NativeGuestMemory)backend.AllocateMemory(vm);
        using var fresh = (NativeGuestMemory)backend.AllocateMemory(vm);
        Assert.True(pooled.Pooled);
        Assert.False(fresh.Pooled);
    }

    [Fact]
    public void A_disposed_pool_keeps_a_rented_range_usable_until_it_is_returned()
    {
        var pool = new GuestMemoryPool(2 * MiB);
        var guest = pool.TryRent(PagesPerMiB)!;
        pool.Dispose();
        var page = Enumerable.Repeat((byte)7, Page.Size).ToArray();
        guest.WritePage(0, page); // would fault if the pool had unmapped its memory
        var read = new byte[Page.Size];
        guest.ReadPage(0, read);
        Assert.Equal(page, read);
        guest.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.TryRent(1));
    }
}
