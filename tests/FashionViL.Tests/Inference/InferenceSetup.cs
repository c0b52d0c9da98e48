namespace FashionViL.Tests.Inference;

/// <summary>Builds the shared tiny checkpoint once before the Inference tests, so no single test pays for it.</summary>
[SetUpFixture]
public class InferenceSetup
{
    [OneTimeSetUp]
    public void BuildTinyCheckpoint() => _ = InferenceTestData.Instance;
}
