namespace FashionViL.Data;

/// <summary>
/// Soft pseudo-attribute targets for PAC (spec §2.6). (Not named <c>AttributeTargets</c>: that clashes with
/// <see cref="System.AttributeTargets"/> wherever <c>System</c> is imported.)
/// </summary>
public static class PseudoAttributes
{
    /// <summary>Size of the pseudo-attribute vocabulary (hard-coded in the reference).</summary>
    public const int Count = 2232;

    /// <summary>
    /// A vector of <paramref name="numAttributes"/> floats with 1/n at each listed id, n = <c>ids.Count</c>, 0 elsewhere;
    /// all zero for an empty list (that sample is then left out of the PAC loss). Like the reference
    /// (<c>attribute_labels[ids] = 1 / len(ids)</c>, an indexed assignment), a repeated id is set, not summed, and
    /// still counts in n, so the row then sums to less than 1 (the loss renormalises it).
    /// </summary>
    public static float[] Soft(IReadOnlyList<int> ids, int numAttributes = Count)
    {
        ArgumentNullException.ThrowIfNull(ids);
        if (numAttributes <= 0) throw new ArgumentOutOfRangeException(nameof(numAttributes), numAttributes, "must be positive");
        var y = new float[numAttributes];
        if (ids.Count == 0) return y;
        float w = (float)(1.0 / ids.Count); // Python float 1/n stored into a float32 row, as the reference does
        for (int i = 0; i < ids.Count; i++)
        {
            int id = ids[i];
            if ((uint)id >= (uint)numAttributes)
                throw new ArgumentOutOfRangeException(nameof(ids), id,
                    $"attribute id {id} (position {i} of attributes_id) is outside [0, {numAttributes})");
            y[id] = w;
        }
        return y;
    }
}
