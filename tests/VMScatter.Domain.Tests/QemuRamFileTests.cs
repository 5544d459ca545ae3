using VMScatter.Qemu;
using Xunit;

namespace VMScatter.Domain.Tests;

public sealed class QemuRamFileTests
{
    [Fact]
    public void A_ram_files_data_ranges_cover_the_pages_written_and_leave_out_the_holes()
    {
        // 2,048 pages; writes far apart, so the check holds with 4 KiB pages and with 2 MiB ones (512 pages).
        string path = Path.Combine("/dev/shm", $"vmscatter-test-{Guid.NewGuid():N}.ram");
        using var ram = QemuRamFile.Create(path, 8L << 20);
        Assert.Empty(ram.DataRanges());
        var page = new byte[4096];
        page[7] = 1;
        int[] written = [3, 1000, 1001, 2047];
        foreach (int p in written) ram.WritePage(p, page);
        // A page written with zeros is data too: it is read, and found zero.
        ram.WritePage(1700, new byte[4096]);

        using var reading = QemuRamFile.OpenForReading(path, 8L << 20);
        var ranges = reading.DataRanges();
        bool Covered(int p) => ranges.Any(r => r.First <= p && p < r.End);
        Assert.All(written.Append(1700), p => Assert.True(Covered(p), $"page {p} not in {string.Join(", ", ranges)}"));
        Assert.False(Covered(1300), string.Join(", ", ranges));
        Assert.Equal(ranges.OrderBy(r => r.First), ranges);
        Assert.All(ranges, r => Assert.True(r.First < r.End && r.End <= 2048));
        // Where the file system keeps 4 KiB pages (tmpfs here), exactly the pages written.
        if (ranges.Sum(r => r.End - r.First) < 512)
            Assert.Equal([(3, 4), (1000, 1002), (1700, 1701), (2047, 2048)], ranges);
    }

    [Fact]
    public void The_data_ranges_are_the_mapped_files_even_when_its_path_names_another_file_now()
    {
        // Asked of whatever the path names, an empty file put there would make every page a hole: read as zeros, and the
        // guest's handover digest (built from those hashes) would agree with a target that never got its memory.
        string path = Path.Combine("/dev/shm", $"vmscatter-test-{Guid.NewGuid():N}.ram");
        using var written = QemuRamFile.Create(path, 1L << 20);
        var page = new byte[4096];
        page[0] = 9;
        written.WritePage(10, page);
        using var reading = QemuRamFile.OpenForReading(path, 1L << 20);
        File.Delete(path);
        using (var other = new FileStream(path, FileMode.CreateNew)) other.SetLength(1L << 20);
        try
        {
            var ranges = reading.DataRanges();
            Assert.Contains(ranges, r => r.First <= 10 && 10 < r.End);
            Assert.Equal(9, reading.PageSpan(10)[0]);
        }
        finally { File.Delete(path); }
    }
}
