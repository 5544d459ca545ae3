using System.Numerics;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Scheduling;

namespace VMScatter.DataPlane.Target;

/// <summary>Applying a frame's records under the gate: contents into the store or their first page, page maps, withdrawals, device state, round ends.</summary>
public sealed partial class MigrationReceiver
{
    /// <summary>
    /// Stores a content batch's records and says which later hosts it goes on to. Each record's bytes must decode to a page
    /// whose content hash matches the record's check, whoever sealed the frame (the source, or a relaying host); a relayed
    /// batch must also carry the source's tag for this host (<see cref="FrameCodec.SourceTag"/>), which no relay can make.
    /// </summary>
    private ulong ApplyContents(ContentBatch batch, FrameHeader header, ReadOnlySpan<byte> payload)
    {
        int relayedBy = header.RelayedBy;
        if ((batch.RecipientMask >> SelfIndex & 1) == 0) throw new FrameRejectedException($"content batch not addressed to host {SelfIndex}");
        if (!TargetMask.Within(batch.RecipientMask, _peers.Count)) throw new FrameRejectedException("content batch names unknown hosts");
        // The source sends a batch to its group's first host; each host relays it to the next one only.
        ulong before = batch.RecipientMask & ((1UL << SelfIndex) - 1);
        if (relayedBy == FrameHeader.FromSource ? before != 0 : 63 - BitOperations.LeadingZeroCount(before) != relayedBy)
            throw new FrameRejectedException(relayedBy == FrameHeader.FromSource
                ? $"content batch from the source for a group whose first host is not {SelfIndex}"
                : $"content batch relayed by host {relayedBy}, which is not the host before {SelfIndex} in its group");
        if (relayedBy != FrameHeader.FromSource)
        {
            int tag = (BitOperations.PopCount(before) - 1) * Records.SourceTagSize;
            if (!FrameCodec.IsSourceTag(_keys.Own, header.Sequence, payload[..batch.SignedLength], batch.SourceTags.Span.Slice(tag, Records.SourceTagSize)))
                throw new FrameRejectedException($"content batch relayed by host {relayedBy} without the source's tag for host {SelfIndex}");
        }
        // A stale frame (of a round the source gave up) is neither applied nor relayed.
        if (!CheckRound(batch.Round)) return 0;
        StoreContents(batch);
        // Relay to the next host of the group after this one, if any.
        // (2UL << 63 overflows to 0, so host 63 relays to nobody.)
        return batch.RecipientMask & ~((2UL << SelfIndex) - 1);
    }

    /// <summary>A content batch's records, each decoded and checked against its content hash, into the pages awaiting them or the store.</summary>
    private void StoreContents(ContentBatch batch)
    {
        Span<byte> page = stackalloc byte[Page.Size];
        foreach (var record in batch.Records)
        {
            if (!PageCodec.TryDecode(record.Encoding, record.Encoded.Span, page)) throw new FrameRejectedException($"content {record.ContentId} does not decode to one page");
            var hash = ContentHash.Compute(page);
            if (ContentRecord.CheckOf(hash) != record.Check) throw new FrameRejectedException($"content {record.ContentId} does not match its content hash");
            if (Holds(record.ContentId))
            {
                if (!BytesOf(record.ContentId).SequenceEqual(page))
                    throw new FrameRejectedException($"content {record.ContentId} arrived twice with different bytes");
            }
            else if (_pending.Remove(record.ContentId, out var waiting))
            {
                // Its pages are known: write them, and keep the content in the first of them only.
                foreach (var (vm, p) in waiting) WriteBytes(vm, p, page, hash);
                var (homeVm, homePage) = waiting[0];
                _homeOf[record.ContentId] = (homeVm, homePage, hash);
                _homeContent[(homeVm, homePage)] = record.ContentId;
            }
            else
            {
                _contentSlot[record.ContentId] = _contents.Append(page);
                _contentHashes.Add(hash);
            }
        }
        Counts(batch.Round).Contents += batch.Records.Count;
        Interlocked.Add(ref _contentRecords, batch.Records.Count);
    }

    private void ApplyMaps(MapBatch batch)
    {
        if (batch.TargetIndex != SelfIndex) throw new FrameRejectedException($"page maps for host {batch.TargetIndex} arrived at host {SelfIndex}");
        if (!CheckRound(batch.Round)) return;
        foreach (var map in batch.Maps)
        {
            if (!_vms.TryGetValue(map.VmIndex, out var vm)) throw new FrameRejectedException($"VM {map.VmIndex} is not received by this host");
            if (_released.Contains(map.VmIndex)) throw new FrameRejectedException($"VM {map.VmIndex} runs here already: its memory takes no page maps");
            if (map.PageIndex >= vm.Memory.PageCount) throw new FrameRejectedException($"page {map.PageIndex} outside VM {map.VmIndex}'s {vm.Memory.PageCount} pages");
            if (map.ContentId == 0) WriteBytes(map.VmIndex, map.PageIndex, ZeroPage, ContentHash.OfZeroPage);
            else if (Holds(map.ContentId)) Write(map.VmIndex, map.PageIndex, map.ContentId);
            else
            {
                if (!_pending.TryGetValue(map.ContentId, out var list)) _pending[map.ContentId] = list = new();
                list.Add((map.VmIndex, map.PageIndex));
            }
        }
        Counts(batch.Round).Maps += batch.Maps.Count;
    }

    private bool Holds(long contentId) => _contentSlot.ContainsKey(contentId) || _homeOf.ContainsKey(contentId);

    /// <summary>Writes a content already held here (in the store or in its home page) to a page.</summary>
    private void Write(int vm, int page, long contentId)
    {
        if (_homeOf.TryGetValue(contentId, out var home))
        {
            if ((home.Vm, home.Page) == (vm, page)) return; // already there
            _vms[home.Vm].Memory.ReadPage(home.Page, _homeBytes);
            WriteBytes(vm, page, _homeBytes, home.Hash);
            return;
        }
        int slot = _contentSlot[contentId];
        WriteBytes(vm, page, _contents.Get(slot), _contentHashes[slot]);
    }

    private void WriteBytes(int vm, int page, ReadOnlySpan<byte> bytes, ContentHash hash)
    {
        if (_homeContent.Remove((vm, page), out long displaced)) Evict(displaced);
        _vms[vm].Memory.WritePage(page, bytes);
        _pageHashes[vm][page] = hash;
    }

    /// <summary>A content whose home page is about to be overwritten moves into the store.</summary>
    private void Evict(long contentId)
    {
        var (vm, page, hash) = _homeOf[contentId];
        _homeOf.Remove(contentId);
        _vms[vm].Memory.ReadPage(page, _evicted);
        _contentSlot[contentId] = _contents.Append(_evicted);
        _contentHashes.Add(hash);
    }

    /// <summary>The bytes of a content held here (store or home page); valid until the next write.</summary>
    private ReadOnlySpan<byte> BytesOf(long contentId)
    {
        if (_contentSlot.TryGetValue(contentId, out int slot)) return _contents.Get(slot);
        var (vm, page, _) = _homeOf[contentId];
        _vms[vm].Memory.ReadPage(page, _homeBytes);
        return _homeBytes;
    }

    private void ApplyRoundEnd(RoundEnd end)
    {
        if (end.TargetIndex != SelfIndex) throw new FrameRejectedException($"round end for host {end.TargetIndex} arrived at host {SelfIndex}");
        if (!CheckRound(end.Round)) return;
        var c = Counts(end.Round);
        if (c.End is not null) throw new FrameRejectedException($"round {end.Round} ended twice");
        foreach (int vm in end.DeviceStateVms)
        {
            if (!_vms.ContainsKey(vm)) throw new FrameRejectedException($"round {end.Round} names device state for VM {vm}, which this host does not receive");
            if (_released.Contains(vm)) throw new FrameRejectedException($"round {end.Round} names device state for VM {vm}, which runs here already");
        }
        c.End = end;
    }

    /// <summary>
    /// The source will not send these contents this round (the pages that needed them were rewritten before their
    /// turn): their pages stop waiting and keep what they hold until the next round, which carries them again.
    /// </summary>
    private void ApplyWithdrawn(ContentsWithdrawn withdrawn)
    {
        if (withdrawn.TargetIndex != SelfIndex) throw new FrameRejectedException($"withdrawn contents for host {withdrawn.TargetIndex} arrived at host {SelfIndex}");
        if (!CheckRound(withdrawn.Round)) return;
        if (Counts(withdrawn.Round).End is not null) throw new FrameRejectedException($"contents withdrawn after round {withdrawn.Round} ended");
        // A round sent again (a target was lost during it) may withdraw a content that its first sending brought here.
        foreach (long id in withdrawn.ContentIds)
            if (!_pending.Remove(id) && !Holds(id)) throw new FrameRejectedException($"content {id} withdrawn but no page here awaits it");
        Interlocked.Add(ref _contentsWithdrawn, withdrawn.ContentIds.Count);
    }

    private void ApplyDeviceState(DeviceStateChunk chunk)
    {
        if (!_vms.ContainsKey(chunk.VmIndex)) throw new FrameRejectedException($"device state for VM {chunk.VmIndex}, which this host does not receive");
        if (_released.Contains(chunk.VmIndex)) throw new FrameRejectedException($"VM {chunk.VmIndex} runs here already: its device state is set");
        if (!_deviceState.TryGetValue(chunk.VmIndex, out var state))
        {
            _deviceState[chunk.VmIndex] = state = new byte[chunk.TotalLength];
            _deviceStateReceived[chunk.VmIndex] = 0;
            _deviceStateChunks[chunk.VmIndex] = new();
        }
        if (state.Length != chunk.TotalLength) throw new FrameRejectedException("device state size changed between chunks");
        chunk.Bytes.Span.CopyTo(state.AsSpan(chunk.Offset));
        // A chunk sent again (its round was sent again) lands on itself: counted once.
        if (_deviceStateChunks[chunk.VmIndex].TryGetValue(chunk.Offset, out int length))
        {
            if (length != chunk.Bytes.Length) throw new FrameRejectedException("device state chunks overlap");
            return;
        }
        _deviceStateChunks[chunk.VmIndex][chunk.Offset] = chunk.Bytes.Length;
        _deviceStateReceived[chunk.VmIndex] += chunk.Bytes.Length;
        if (_deviceStateReceived[chunk.VmIndex] > state.Length) throw new FrameRejectedException("device state chunks overlap");
    }

    /// <summary>
    /// Rounds are applied in order, and the source starts round r+1 only after every host still receiving applied
    /// round r. So a frame of a later round means the source moved on: this host was not in the rounds between (its
    /// wave was through, or it had none), or the source gave the open round up because a target was lost during it and
    /// sends it again under the new number. The open round is dropped (what it wrote stays: the same pages get the same
    /// contents again) and later frames of it are stale: false, dropped and counted, never applied.
    /// </summary>
    private bool CheckRound(int round)
    {
        if (round < _nextRound)
        {
            Interlocked.Increment(ref _staleFrames);
            return false;
        }
        if (round > _nextRound)
        {
            foreach (int open in _rounds.Keys.Where(r => r < round).ToArray()) _rounds.Remove(open);
            _nextRound = round;
        }
        return true;
    }

    private void CheckRoundComplete()
    {
        if (!_rounds.TryGetValue(_nextRound, out var c) || c.End is not { } end) return;
        if (c.Contents > end.ExpectedContents || c.Maps > end.ExpectedMaps) throw new FrameRejectedException($"round {end.Round} got more records than announced");
        if (c.Contents < end.ExpectedContents || c.Maps < end.ExpectedMaps || _pending.Count > 0) return;
        // Only the VMs this round carries device state for: one re-placed here for a later wave has none yet.
        if (end.DeviceStateVms.Any(v => !_deviceState.TryGetValue(v, out var s) || _deviceStateReceived[v] != s.Length)) return;
        _rounds.Remove(_nextRound);
        _nextRound++;
        _outcomes.Writer.TryWrite(new RoundOutcome(end.Round, end.Final, null));
    }

    private RoundCounts Counts(int round) => _rounds.TryGetValue(round, out var c) ? c : _rounds[round] = new RoundCounts();
}
